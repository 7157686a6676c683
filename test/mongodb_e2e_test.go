//go:build e2e

package test

// The mongod and Percona Server for MongoDB KMIP clients, reproduced byte for byte:
// their operation sequences (CLIENTS.md "Operation sequences") and their parsers'
// strictness (W1–W16), since neither server can be installed here.

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/test/framework"
)

const maskEncryptDecrypt = int32(kmip14.CryptographicUsageMaskEncrypt | kmip14.CryptographicUsageMaskDecrypt) // 12

// TestMongod replays the encrypted storage engine's KMIP use at 1.2 (default) and 1.0
// (kmipUseLegacyProtocol): first start, restart, state polling, audit-log encryption.
func TestMongod(t *testing.T) {
	t.Parallel()
	app := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{})
	for _, v := range []msg.Version{ver12, ver10} {
		t.Run("v"+v.String(), func(t *testing.T) {
			h := framework.Header{Version: v}

			// First start: Create → Get → Activate → GetAttributes(State).
			s := openKMIP(t, app, app.AdminPEM, h)
			p := s.ok(kmip14.OperationCreate, objType(kmip14.ObjectTypeSymmetricKey), framework.Template(
				enumAttr("Cryptographic Algorithm", uint32(kmip14.CryptographicAlgorithmAES)),
				intAttr("Cryptographic Length", 256),
				intAttr("Cryptographic Usage Mask", maskEncryptDecrypt)))
			requireTags(t, "Create payload", p, kmip14.TagObjectType, kmip14.TagUniqueIdentifier)
			if p.Children[0].Int != int64(kmip14.ObjectTypeSymmetricKey) {
				t.Fatalf("Create: object type %v", kmip14.ObjectType(p.Children[0].Int))
			}
			uid := p.Children[1].Text()
			key := getSymKey(t, s, uid, 256) // W8: Get works on a Pre-Active key
			if len(key) != 32 {
				t.Fatalf("Get: %d key bytes, want 32", len(key))
			}
			if got := uidOf(t, "Activate payload", s.ok(kmip14.OperationActivate, framework.UID(uid))); got != uid {
				t.Fatalf("Activate: UID %q, want %q", got, uid)
			}
			if st := keyState(t, s, uid); st != kmip14.StateActive {
				t.Fatalf("state after Activate: %v, want Active", st)
			}

			// Restart with the key id: Get → GetAttributes(State) on a new connection.
			s2 := openKMIP(t, app, app.AdminPEM, h)
			if got := getSymKey(t, s2, uid, 256); !bytes.Equal(got, key) {
				t.Fatal("Get after restart returned different key bytes")
			}
			if st := keyState(t, s2, uid); st != kmip14.StateActive {
				t.Fatalf("state on restart: %v", st)
			}

			// Polling: a new TLS connection each time, GetAttributes(State), then
			// gone; every other poll drops the connection without close_notify.
			for i := range 4 {
				c, err := framework.Dial(t.Context(), app.Addr, framework.ReadFile(t, app.AdminPEM), framework.ReadFile(t, app.CAPEM))
				if err != nil {
					t.Fatal(err)
				}
				poll := &kmipSession{t: t, c: c, h: h}
				if st := keyState(t, poll, uid); st != kmip14.StateActive {
					t.Fatalf("poll %d: state %v", i, st)
				}
				if i%2 == 0 {
					c.Abort()
				} else {
					c.Close()
				}
			}

			// A batch item ID, when sent, is echoed in place (W3).
			s.itemID = []byte{0xca, 0xfe, 0x00, 0x01}
			if st := keyState(t, s, uid); st != kmip14.StateActive {
				t.Fatalf("state with a batch item id: %v", st)
			}
			s.itemID = nil

			// Audit-log encryption: Encrypt{UID, Data} without parameters is
			// AES-CBC-PKCS5 with a server IV (W9); Decrypt{UID, Data, IV} reverses it.
			// Encrypt and Decrypt exist from KMIP 1.2 on, so only at 1.2.
			if v != ver12 {
				return
			}
			for _, n := range []int{0, 15, 16, 100} {
				plain := make([]byte, n)
				rand.Read(plain)
				p := s.ok(kmip14.OperationEncrypt, framework.UID(uid), msg.Bytes(kmip14.TagData, plain))
				requireTags(t, "Encrypt payload", p, kmip14.TagUniqueIdentifier, kmip14.TagData, kmip14.TagIVCounterNonce)
				if p.Children[0].Text() != uid {
					t.Fatalf("Encrypt: UID %q", p.Children[0].Bytes)
				}
				ct, iv := p.Children[1].Bytes, p.Children[2].Bytes
				if len(iv) != 16 || len(ct) != (n/16+1)*16 {
					t.Fatalf("Encrypt of %d bytes: %d bytes of data, %d of IV; want %d and 16", n, len(ct), len(iv), (n/16+1)*16)
				}
				if got := cbcDecrypt(t, key, iv, ct); !bytes.Equal(got, plain) {
					t.Fatalf("Encrypt of %d bytes is not AES-256-CBC-PKCS5 under the key Get returned", n)
				}
				p = s.ok(kmip14.OperationDecrypt, framework.UID(uid), msg.Bytes(kmip14.TagData, ct), msg.Bytes(kmip14.TagIVCounterNonce, iv))
				requireTags(t, "Decrypt payload", p, kmip14.TagUniqueIdentifier, kmip14.TagData)
				if !bytes.Equal(p.Children[1].Bytes, plain) {
					t.Fatalf("Decrypt of %d bytes returned other data", n)
				}
			}
			// Two encryptions of the same data use different IVs.
			a := s.ok(kmip14.OperationEncrypt, framework.UID(uid), msg.Bytes(kmip14.TagData, []byte("audit")))
			b := s.ok(kmip14.OperationEncrypt, framework.UID(uid), msg.Bytes(kmip14.TagData, []byte("audit")))
			if bytes.Equal(a.Child(kmip14.TagIVCounterNonce).Bytes, b.Child(kmip14.TagIVCounterNonce).Bytes) {
				t.Fatal("the server reused an IV")
			}

		})
	}
}

func cbcDecrypt(t *testing.T, key, iv, ct []byte) []byte {
	t.Helper()
	blk, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	if len(ct) == 0 || len(ct)%16 != 0 {
		t.Fatalf("ciphertext of %d bytes", len(ct))
	}
	out := make([]byte, len(ct))
	cipher.NewCBCDecrypter(blk, iv).CryptBlocks(out, ct)
	pad := int(out[len(out)-1])
	if pad == 0 || pad > 16 || !bytes.Equal(out[len(out)-pad:], bytes.Repeat([]byte{byte(pad)}, pad)) {
		t.Fatalf("bad PKCS5 padding %d", pad)
	}
	return out[:len(out)-pad]
}

// perconaHeader is libkmip's 1.0 header: Maximum Response Size 8192 and a Time Stamp.
func perconaHeader(skew time.Duration) framework.Header {
	return framework.Header{Version: ver10, MaxResponseSize: 8192, TimeStamp: time.Now().Add(skew)}
}

// TestPercona replays Percona Server for MongoDB (libkmip, always 1.0): Register a raw
// AES-256 key → Activate → GetAttributes(State) → Get only if Active, with an honest
// clock and with one a day off either way (W16).
func TestPercona(t *testing.T) {
	t.Parallel()
	app := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{})
	for _, tc := range []struct {
		name string
		skew time.Duration
	}{{"clock", 0}, {"clock+1d", 24 * time.Hour}, {"clock-1d", -24 * time.Hour}} {
		t.Run(tc.name, func(t *testing.T) {
			s := openKMIP(t, app, app.AdminPEM, perconaHeader(tc.skew))
			key := make([]byte, 32)
			rand.Read(key)
			uid := uidOf(t, "Register payload", s.ok(kmip14.OperationRegister,
				objType(kmip14.ObjectTypeSymmetricKey),
				framework.Template(intAttr("Cryptographic Usage Mask", maskEncryptDecrypt)),
				symmetricKey(key, kmip14.CryptographicAlgorithmAES, 256)))
			// libkmip compares the Activate reply's UID with its request byte for byte.
			if got := uidOf(t, "Activate payload", s.ok(kmip14.OperationActivate, framework.UID(uid))); got != uid {
				t.Fatalf("Activate: UID %q, want %q (W11)", got, uid)
			}
			// Startup with state checks, on a fresh connection as a restart would.
			s2 := openKMIP(t, app, app.AdminPEM, perconaHeader(tc.skew))
			if st := keyState(t, s2, uid); st != kmip14.StateActive {
				t.Fatalf("state %v, want Active", st)
			}
			if got := getSymKey(t, s2, uid, 256); !bytes.Equal(got, key) {
				t.Fatal("Get returned other bytes than registered")
			}
		})
	}

	t.Run("older release base64 key with name and group", func(t *testing.T) {
		s := openKMIP(t, app, app.AdminPEM, perconaHeader(0))
		raw := make([]byte, 32)
		rand.Read(raw)
		material := []byte(base64.StdEncoding.EncodeToString(raw)) // 44 bytes of text
		bits := int32(8 * len(material))
		uid := uidOf(t, "Register payload", s.ok(kmip14.OperationRegister,
			objType(kmip14.ObjectTypeSymmetricKey),
			framework.Template(
				enumAttr("Cryptographic Algorithm", uint32(kmip14.CryptographicAlgorithmAES)),
				intAttr("Cryptographic Length", bits),
				intAttr("Cryptographic Usage Mask", maskEncryptDecrypt),
				nameAttr("percona-master-key-"+t.Name()),
				framework.Attr("Object Group", msg.Text(0, "percona-server-mongodb"))),
			symmetricKey(material, kmip14.CryptographicAlgorithmAES, bits)))
		uidOf(t, "Activate payload", s.ok(kmip14.OperationActivate, framework.UID(uid)))
		if st := keyState(t, s, uid); st != kmip14.StateActive {
			t.Fatalf("state %v", st)
		}
		if got := getSymKey(t, s, uid, bits); !bytes.Equal(got, material) {
			t.Fatalf("Get returned %q, want the registered text %q", got, material)
		}
	})

	t.Run("response size limit", func(t *testing.T) {
		// W15: a reply that would exceed Maximum Response Size is Response Too Large.
		s := openKMIP(t, app, app.AdminPEM, perconaHeader(0))
		key := make([]byte, 32)
		rand.Read(key)
		uid := uidOf(t, "Register payload", s.ok(kmip14.OperationRegister, objType(kmip14.ObjectTypeSymmetricKey),
			framework.Template(intAttr("Cryptographic Usage Mask", maskEncryptDecrypt)),
			symmetricKey(key, kmip14.CryptographicAlgorithmAES, 256)))
		// A 1.0 Get reply of a 256-bit key is about 300 bytes; the error fits in 256.
		s.h.MaxResponseSize = 256
		s.fail(kmip14.OperationGet, kmip14.ResultReasonResponseTooLarge, framework.UID(uid))
		s.h.MaxResponseSize = 8192
		getSymKey(t, s, uid, 256)
	})
}

// TestUnknownAndWeirdIdentifiers checks W4 (an unknown id is Item Not Found, which
// Percona reads as "key absent") and W11 (any string is an identifier: no crash, no
// other reason, and the stream stays usable) at 1.0 and 1.2.
func TestUnknownAndWeirdIdentifiers(t *testing.T) {
	t.Parallel()
	app := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{})
	weird := []string{
		"no-such-key", "", " ", "0", "-1", "99999999999999999999", "../../etc/passwd",
		"'; DROP TABLE objects; --", "%s%n%x", "ünïcödé-ключ-鍵", "a\x00b", "\xff\xfe",
		strings.Repeat("x", 4000), "<xml/>", "$UNIQUE_IDENTIFIER_0",
	}
	for _, v := range []msg.Version{ver10, ver12} {
		s := openKMIP(t, app, app.AdminPEM, framework.Header{Version: v})
		for _, id := range weird {
			s.fail(kmip14.OperationGet, kmip14.ResultReasonItemNotFound, framework.UID(id))
			s.fail(kmip14.OperationGetAttributes, kmip14.ResultReasonItemNotFound, framework.UID(id), msg.Text(kmip14.TagAttributeName, "State"))
		}
		// The connection still works for a real key afterwards.
		key := make([]byte, 32)
		rand.Read(key)
		uid := uidOf(t, "Register payload", s.ok(kmip14.OperationRegister, objType(kmip14.ObjectTypeSymmetricKey),
			framework.Template(intAttr("Cryptographic Usage Mask", maskEncryptDecrypt)),
			symmetricKey(key, kmip14.CryptographicAlgorithmAES, 256)))
		if st := keyState(t, s, uid); st != kmip14.StatePreActive {
			t.Fatalf("v%v: state %v, want PreActive", v, st)
		}
	}
}

// TestLegacyFullAttributes asks a 1.0 GetAttributes with no names, which returns every
// attribute: none may be one 1.0 does not define, and Digest must be in 1.0 form.
func TestLegacyFullAttributes(t *testing.T) {
	t.Parallel()
	app := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{})
	s := openKMIP(t, app, app.AdminPEM, perconaHeader(0))
	p := s.ok(kmip14.OperationCreate, objType(kmip14.ObjectTypeSymmetricKey), framework.Template(
		enumAttr("Cryptographic Algorithm", uint32(kmip14.CryptographicAlgorithmAES)),
		intAttr("Cryptographic Length", 256),
		intAttr("Cryptographic Usage Mask", maskEncryptDecrypt),
		nameAttr("legacy")))
	uid := p.Child(kmip14.TagUniqueIdentifier).Text()
	s.ok(kmip14.OperationActivate, framework.UID(uid))
	// check10 runs on every reply of s; these are the ones most likely to carry later
	// attributes.
	all := s.ok(kmip14.OperationGetAttributes, framework.UID(uid))
	if len(all.All(kmip14.TagAttribute)) < 5 {
		t.Fatalf("GetAttributes with no names returned %d attributes", len(all.All(kmip14.TagAttribute)))
	}
	s.ok(kmip14.OperationGetAttributeList, framework.UID(uid))
	s.ok(kmip14.OperationLocate, framework.Attr("Name", msg.Struct(0,
		msg.Text(kmip14.TagNameValue, "legacy"), msg.Enum(kmip14.TagNameType, uint32(kmip14.NameTypeUninterpretedTextString)))))
}

// TestConnectionPatterns checks W13: many requests on one long-lived connection, one
// request per connection (in parallel, half of them dropped without close_notify),
// and the server still serving afterwards.
func TestConnectionPatterns(t *testing.T) {
	t.Parallel()
	app := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{})
	long := openKMIP(t, app, app.AdminPEM, framework.Header{Version: ver12})
	key := make([]byte, 32)
	rand.Read(key)
	uid := uidOf(t, "Register payload", long.ok(kmip14.OperationRegister, objType(kmip14.ObjectTypeSymmetricKey),
		framework.Template(intAttr("Cryptographic Usage Mask", maskEncryptDecrypt)),
		symmetricKey(key, kmip14.CryptographicAlgorithmAES, 256)))
	long.ok(kmip14.OperationActivate, framework.UID(uid))
	for i := range 200 {
		if st := keyState(t, long, uid); st != kmip14.StateActive {
			t.Fatalf("request %d on the long connection: state %v", i, st)
		}
	}

	bundle, ca := framework.ReadFile(t, app.AdminPEM), framework.ReadFile(t, app.CAPEM)
	var wg sync.WaitGroup
	errs := make(chan string, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := framework.Dial(t.Context(), app.Addr, bundle, ca)
			if err != nil {
				errs <- err.Error()
				return
			}
			req := framework.Request(framework.Header{Version: ver10}, framework.Item(kmip14.OperationGetAttributes, nil,
				framework.UID(uid), msg.Text(kmip14.TagAttributeName, "State")))
			r, err := c.RoundTrip(req)
			if err != nil {
				errs <- err.Error()
			} else if st, _ := (framework.Reply{Root: r}).Status(0); st != kmip14.ResultStatusSuccess {
				errs <- "status " + st.String()
			}
			if i%2 == 0 {
				c.Abort()
			} else {
				c.Close()
			}
		}()
	}
	// Connections that send half a request and vanish.
	for range 5 {
		c, err := framework.Dial(t.Context(), app.Addr, bundle, ca)
		if err != nil {
			t.Fatal(err)
		}
		full := framework.Request(framework.Header{Version: ver12}, framework.Item(kmip14.OperationGet, nil, framework.UID(uid))).Append(nil)
		if err := c.Send(full[:len(full)/2]); err != nil {
			t.Fatal(err)
		}
		c.Abort()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("one request per connection: %s", e)
	}
	// The long-lived connection and new ones still work.
	if got := getSymKey(t, long, uid, 256); !bytes.Equal(got, key) {
		t.Fatal("Get after the connection storm returned other bytes")
	}
	if !app.Server.Running() {
		t.Fatal("server exited")
	}
}
