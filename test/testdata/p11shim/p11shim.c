/*
 * p11shim: a PKCS#11 module that forwards to a real one (P11SHIM_MODULE) and
 * simulates a token that disappears. While the file P11SHIM_CONTROL exists, the
 * token is "gone": the first call that notices closes every real session
 * (C_CloseAllSessions, which also ends the login, exactly as a removed token
 * or a restarted HSM does), and every wrapped call fails with
 * CKR_DEVICE_REMOVED (CKR_TOKEN_NOT_PRESENT for opening a session or reading
 * token info). Once the file is removed, calls reach the real module again,
 * where the old session handles are invalid: the caller must open new
 * sessions and log in again, which is what the hsmfault end-to-end test
 * checks the server does on its own.
 *
 * Build: gcc -shared -fPIC -I<miekg/pkcs11 module dir> -o p11shim.so p11shim.c -ldl
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pkcs11go.h"

static CK_FUNCTION_LIST_PTR real;
static CK_FUNCTION_LIST shim;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int gone;            /* the fault has been seen and the sessions closed */
static CK_SLOT_ID slots[16]; /* slots sessions were opened on */
static int nslots;

/* fault returns CKR_OK when the token is present, else code. On the first call
 * of a fault it closes every real session on every slot used so far. */
static CK_RV fault(CK_RV code) {
	const char *ctl = getenv("P11SHIM_CONTROL");
	struct stat st;
	int on = ctl != NULL && stat(ctl, &st) == 0;
	pthread_mutex_lock(&mu);
	if (on && !gone) {
		for (int i = 0; i < nslots; i++) {
			real->C_CloseAllSessions(slots[i]);
		}
	}
	gone = on;
	pthread_mutex_unlock(&mu);
	return on ? code : CKR_OK;
}

static void remember(CK_SLOT_ID slot) {
	pthread_mutex_lock(&mu);
	int seen = 0;
	for (int i = 0; i < nslots; i++) {
		seen |= slots[i] == slot;
	}
	if (!seen && nslots < 16) {
		slots[nslots++] = slot;
	}
	pthread_mutex_unlock(&mu);
}

static CK_RV w_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify, CK_SESSION_HANDLE_PTR sh) {
	CK_RV rv = fault(CKR_TOKEN_NOT_PRESENT);
	if (rv != CKR_OK) {
		return rv;
	}
	remember(slot);
	return real->C_OpenSession(slot, flags, app, notify, sh);
}

/* WRAP defines w_NAME that fails with code during a fault and forwards otherwise. */
#define WRAP(name, code, params, args)                 \
	static CK_RV w_##name params {                 \
		CK_RV rv = fault(code);                \
		if (rv != CKR_OK) {                    \
			return rv;                     \
		}                                      \
		return real->C_##name args;            \
	}

WRAP(GetTokenInfo, CKR_TOKEN_NOT_PRESENT, (CK_SLOT_ID s, CK_TOKEN_INFO_PTR i), (s, i))
WRAP(CloseSession, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h), (h))
WRAP(GetSessionInfo, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h, CK_SESSION_INFO_PTR i), (h, i))
WRAP(Login, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h, CK_USER_TYPE u, CK_UTF8CHAR_PTR p, CK_ULONG n), (h, u, p, n))
WRAP(Logout, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h), (h))
WRAP(FindObjectsInit, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n), (h, t, n))
WRAP(FindObjects, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE_PTR o, CK_ULONG m, CK_ULONG_PTR n), (h, o, m, n))
WRAP(FindObjectsFinal, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h), (h))
WRAP(GenerateKey, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR k), (h, m, t, n, k))
WRAP(CreateObject, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR o), (h, t, n, o))
WRAP(DestroyObject, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o), (h, o))
WRAP(GetAttributeValue, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t, CK_ULONG n), (h, o, t, n))
WRAP(WrapKey, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE w, CK_OBJECT_HANDLE k, CK_BYTE_PTR b, CK_ULONG_PTR n), (h, m, w, k, b, n))
WRAP(UnwrapKey, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE u, CK_BYTE_PTR b, CK_ULONG n, CK_ATTRIBUTE_PTR t, CK_ULONG tn, CK_OBJECT_HANDLE_PTR k), (h, m, u, b, n, t, tn, k))
WRAP(EncryptInit, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k), (h, m, k))
WRAP(Encrypt, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG dn, CK_BYTE_PTR e, CK_ULONG_PTR en), (h, d, dn, e, en))
WRAP(DecryptInit, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k), (h, m, k))
WRAP(Decrypt, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h, CK_BYTE_PTR e, CK_ULONG en, CK_BYTE_PTR d, CK_ULONG_PTR dn), (h, e, en, d, dn))
WRAP(DigestInit, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m), (h, m))
WRAP(DigestKey, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE k), (h, k))
WRAP(DigestFinal, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG_PTR n), (h, d, n))
WRAP(SignInit, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k), (h, m, k))
WRAP(Sign, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG dn, CK_BYTE_PTR s, CK_ULONG_PTR sn), (h, d, dn, s, sn))
WRAP(GenerateRandom, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h, CK_BYTE_PTR b, CK_ULONG n), (h, b, n))

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR out) {
	if (out == NULL) {
		return CKR_ARGUMENTS_BAD;
	}
	pthread_mutex_lock(&mu);
	if (real == NULL) {
		const char *path = getenv("P11SHIM_MODULE");
		void *lib = dlopen(path ? path : "/usr/lib/softhsm/libsofthsm2.so", RTLD_NOW | RTLD_LOCAL);
		CK_RV (*get)(CK_FUNCTION_LIST_PTR_PTR) = lib ? (CK_RV (*)(CK_FUNCTION_LIST_PTR_PTR))dlsym(lib, "C_GetFunctionList") : NULL;
		if (get == NULL || get(&real) != CKR_OK) {
			real = NULL;
			pthread_mutex_unlock(&mu);
			return CKR_GENERAL_ERROR;
		}
		shim = *real;
		shim.C_OpenSession = w_OpenSession;
		shim.C_GetTokenInfo = w_GetTokenInfo;
		shim.C_CloseSession = w_CloseSession;
		shim.C_GetSessionInfo = w_GetSessionInfo;
		shim.C_Login = w_Login;
		shim.C_Logout = w_Logout;
		shim.C_FindObjectsInit = w_FindObjectsInit;
		shim.C_FindObjects = w_FindObjects;
		shim.C_FindObjectsFinal = w_FindObjectsFinal;
		shim.C_GenerateKey = w_GenerateKey;
		shim.C_CreateObject = w_CreateObject;
		shim.C_DestroyObject = w_DestroyObject;
		shim.C_GetAttributeValue = w_GetAttributeValue;
		shim.C_WrapKey = w_WrapKey;
		shim.C_UnwrapKey = w_UnwrapKey;
		shim.C_EncryptInit = w_EncryptInit;
		shim.C_Encrypt = w_Encrypt;
		shim.C_DecryptInit = w_DecryptInit;
		shim.C_Decrypt = w_Decrypt;
		shim.C_DigestInit = w_DigestInit;
		shim.C_DigestKey = w_DigestKey;
		shim.C_DigestFinal = w_DigestFinal;
		shim.C_SignInit = w_SignInit;
		shim.C_Sign = w_Sign;
		shim.C_GenerateRandom = w_GenerateRandom;
	}
	pthread_mutex_unlock(&mu);
	*out = &shim;
	return CKR_OK;
}
