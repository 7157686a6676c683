// Package hsm is the token boundary: the only package that speaks PKCS#11
// (github.com/miekg/pkcs11). It owns the module, the login, a pool of
// sessions, the master wrapping key and a cache of unwrapped key handles,
// and maps CKR codes to a few sentinels (errors.go).
//
// # Model
//
// The token holds a handful of long-lived token objects, among them the
// master wrapping key (MasterLabel) and the audit MAC key (AuditLabel, an
// HMAC-SHA256 key that only signs: see AuditMAC). A managed key is never a
// token object: it is generated (Generate) or imported (Import) as a session object,
// wrapped under the master with CKM_AES_KEY_WRAP_PAD (RFC 5649), and the
// resulting Wrapped blob is stored by the caller. To use a key, Encrypt and
// Decrypt unwrap it once into a sensitive, non-extractable session object
// and keep the handle in a bounded LRU keyed by Key.ID (and a fingerprint of
// the blob, so a changed blob never reuses an old handle).
//
// Masters and backup keys (master.go, backup.go): RotateMaster adds master
// generations hsmkms-master-2, -3, ...; new keys are wrapped under the
// newest (looked up again every 10 s and whenever a blob names an unknown
// one) while every blob is unwrapped under the master it names, so older
// generations stay usable until DeleteMaster. A backup KEK pair
// (hsmkms-backup-N and hsmkms-backup-mac-N, named across tokens by a
// fingerprint) wraps keys for backup files and seals them (BackupMAC);
// Rewrap moves a blob between any two KEKs without the value leaving the
// token. ImportBackupSecret is the one way a KEK enters from outside, for
// the custodian-share ceremony.
//
// Mirroring (pair.go): each token holds one EC P-256 key pair that only
// derives (MirrorIdentity, created on first use under a lock of token
// objects so that concurrent processes never make two). DerivePairKEK turns
// a peer's public key and the agreed pairing context into the AES-256 pair
// KEK hsmkms-pair-<peer> (ECDH, then CKM_AES_ECB_ENCRYPT_DATA over a hash of
// the context, all in the token) and returns a check value that is equal on
// both sides iff the KEKs are; keys then cross between appliances as blobs
// Rewrap moves master -> pair KEK on the sender and back on the receiver.
//
// The optional TLS server key pair (tls.go, TLSKeyLabel) is an ECDSA P-256
// token object that only signs, through a crypto.Signer, for crypto/tls.
// Stats (stats.go) reports the session pool and counts PKCS#11 errors by CKR
// name for metrics; Probe (probe.go) tells an operator which of module, token
// and PIN is wrong.
//
// # Invariants
//
//   - CKA_VALUE is read in exactly one place, readPlain, called only by
//     ExportPlain (the single grep-able way plaintext leaves; its only caller
//     is KMIP Get), by Digest for Secret Data (see Digest) and by the "export"
//     op of RawRate, which measures exactly that path and clears the value.
//     A private key's components (an EC key's CKA_VALUE included) are read
//     only by readPrivate (asym.go), called by ExportPlain, which returns
//     them as PKCS#8, and by privateDigest, which hashes that encoding for
//     KMIP's Digest and clears it. Managed private keys (KindRSA, KindEC)
//     are wrapped under the master like secret keys; their public halves
//     are not secret and are returned to the caller as DER.
//   - Key bytes, wrapped blobs and PINs never reach a log or an error:
//     Wrapped and PINSource redact themselves, and errors name key IDs only.
//   - Cached handles are created on a home session that stays open while
//     the Token is open, because a session object dies with the session that
//     made it and pooled sessions are replaced after errors. A handle is
//     destroyed only when no operation uses it (reference counted).
//   - After a session, login or device failure the call returns
//     ErrTokenUnavailable and the pool heals: the broken session is reopened
//     and logged in on next use; if the home session died, every session
//     did, so all of them reopen and the cache forgets its handles. The next
//     call can succeed without a restart.
//   - No package state: two Tokens on different modules coexist. Several
//     Tokens on one module share its C_Initialize; only the first finalizes
//     (on Close), so it must be closed last.
//
// # SoftHSM2 notes (2.6.1, verified)
//
//   - It reads SOFTHSM2_CONF at C_Initialize; Config.SetEnv sets it first.
//   - CKA_TRUSTED can only be set by the SO, who cannot see private objects,
//     so trusted wrapping is skipped (see InitKeys).
//   - C_UnwrapKey with CKM_AES_KEY_WRAP_PAD returns values zero-padded to a
//     multiple of 8, so Secret Data is stored padded (see encodeValue).
//   - A bad GCM tag, bad CBC padding or a tampered blob fail with
//     CKR_GENERAL_ERROR; on decrypt and unwrap that maps to ErrBadCiphertext.
//
// # Usage
//
//	tok, err := hsm.Open(ctx, hsm.Config{Module: m, TokenLabel: "hsmkms",
//		PIN: hsm.PINSource{File: pinFile}, SetEnv: env, Logger: log})
//	defer tok.Close()
//	err = tok.InitKeys(ctx, nil)         // once, at init
//	w, digest, err := tok.Generate(ctx, 256) // store w.Blob, w.KEK and the digest
//	k := hsm.Key{ID: id, Kind: hsm.KindAES, Wrapped: w}
//	res, err := tok.Encrypt(ctx, hsm.CipherRequest{Key: k, Mode: hsm.ModeGCM, Data: msg})
//	tok.Forget(id)                       // on Destroy
package hsm
