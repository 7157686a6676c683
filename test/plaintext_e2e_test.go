//go:build e2e

package test

// No plaintext at rest: key bytes the server saw (registered, created, used) never
// reach the appliance directory or the logs, and the PINs never reach the logs or the
// process's argv.

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/test/framework"
)

// secret is key material the test must never find at rest.
type secret struct {
	name string
	b    []byte
}

// forms are the encodings a careless implementation might write a secret in.
func (s secret) forms() map[string][]byte {
	return map[string][]byte{
		"raw":          s.b,
		"hex":          []byte(hex.EncodeToString(s.b)),
		"HEX":          []byte(strings.ToUpper(hex.EncodeToString(s.b))),
		"base64":       []byte(base64.StdEncoding.EncodeToString(s.b)),
		"base64url":    []byte(base64.URLEncoding.EncodeToString(s.b)),
		"base64 (raw)": []byte(base64.RawStdEncoding.EncodeToString(s.b)),
	}
}

func TestNoPlaintextAtRest(t *testing.T) {
	t.Parallel()
	// Debug logging gives a leak every chance to show.
	app := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{Env: []string{"HSMKMS_LOG_LEVEL=debug"}})
	var secrets []secret
	random := func(name string, n int) secret {
		b := make([]byte, n)
		rand.Read(b)
		s := secret{name, b}
		secrets = append(secrets, s)
		return s
	}

	for _, v := range []msg.Version{ver10, ver14} {
		s := openKMIP(t, app, app.AdminPEM, framework.Header{Version: v})
		// Registered symmetric keys, Got back, one used for Encrypt/Decrypt.
		for _, n := range []int{16, 24, 32} {
			k := random(fmt.Sprintf("v%v registered AES-%d", v, 8*n), n)
			uid := uidOf(t, "Register payload", s.ok(kmip14.OperationRegister, objType(kmip14.ObjectTypeSymmetricKey),
				framework.Template(intAttr("Cryptographic Usage Mask", maskEncryptDecrypt)),
				symmetricKey(k.b, kmip14.CryptographicAlgorithmAES, int32(8*n))))
			if got := getSymKey(t, s, uid, int32(8*n)); !bytes.Equal(got, k.b) {
				t.Fatalf("%s: Get returned other bytes", k.name)
			}
			if v == ver14 {
				s.ok(kmip14.OperationActivate, framework.UID(uid))
				p := s.ok(kmip14.OperationEncrypt, framework.UID(uid), msg.Bytes(kmip14.TagData, []byte("no plaintext at rest")))
				d := s.ok(kmip14.OperationDecrypt, framework.UID(uid), p.Child(kmip14.TagData), p.Child(kmip14.TagIVCounterNonce))
				if string(d.Child(kmip14.TagData).Bytes) != "no plaintext at rest" {
					t.Fatalf("%s: Decrypt returned other data", k.name)
				}
			}
		}
		// Secret Data, Opaque and Raw (libmongocrypt's 96-byte seed).
		for _, f := range []kmip14.KeyFormatType{kmip14.KeyFormatTypeOpaque, kmip14.KeyFormatTypeRaw} {
			sd := random(fmt.Sprintf("v%v secret data %v", v, f), 96)
			uid := uidOf(t, "Register payload", s.ok(kmip14.OperationRegister, objType(kmip14.ObjectTypeSecretData), framework.Template(),
				msg.Struct(kmip14.TagSecretData, msg.Enum(kmip14.TagSecretDataType, uint32(kmip14.SecretDataTypeSeed)),
					msg.Struct(kmip14.TagKeyBlock, msg.Enum(kmip14.TagKeyFormatType, uint32(f)),
						msg.Struct(kmip14.TagKeyValue, msg.Bytes(kmip14.TagKeyMaterial, sd.b))))))
			p := s.ok(kmip14.OperationGet, framework.UID(uid))
			km := p.Child(kmip14.TagSecretData).Child(kmip14.TagKeyBlock).Child(kmip14.TagKeyValue).Child(kmip14.TagKeyMaterial)
			if km == nil || !bytes.Equal(km.Bytes, sd.b) {
				t.Fatalf("%s: Get returned other bytes", sd.name)
			}
		}
		// Created keys: the server's own material, learnt through Get.
		for _, bits := range []int32{128, 256} {
			p := s.ok(kmip14.OperationCreate, objType(kmip14.ObjectTypeSymmetricKey), framework.Template(
				enumAttr("Cryptographic Algorithm", uint32(kmip14.CryptographicAlgorithmAES)),
				intAttr("Cryptographic Length", bits),
				intAttr("Cryptographic Usage Mask", maskEncryptDecrypt)))
			uid := p.Child(kmip14.TagUniqueIdentifier).Text()
			secrets = append(secrets, secret{fmt.Sprintf("v%v created AES-%d", v, bits), getSymKey(t, s, uid, bits)})
		}
	}

	pins := map[string][]byte{}
	for _, f := range []string{"user.pin", "so.pin"} {
		pin := bytes.TrimSpace(framework.ReadFile(t, filepath.Join(app.Dir, "softhsm", f)))
		if len(pin) < 4 {
			t.Fatalf("%s holds a %d-byte PIN; too short to search for", f, len(pin))
		}
		pins[f] = pin
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(app.Server.PID()) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	for f, pin := range pins {
		if bytes.Contains(cmdline, pin) {
			t.Errorf("the PIN of %s is in the server's argv", f)
		}
	}

	// Read everything while the server runs (WAL and SHM exist only now), then again
	// after a clean stop.
	running := readTree(t, app.Dir)
	app.Stop(t)
	stopped := readTree(t, app.Dir)
	logs := []byte(app.Server.Logs())
	if len(logs) == 0 {
		t.Fatal("no server logs captured")
	}
	var haystacks []hay
	haystacks = append(haystacks, running...)
	haystacks = append(haystacks, stopped...)
	haystacks = append(haystacks, hay{"server logs (stderr/stdout)", logs})

	sawDB, sawToken := false, false
	for _, h := range haystacks {
		sawDB = sawDB || strings.HasSuffix(h.name, "hsmkms.db")
		sawToken = sawToken || strings.Contains(h.name, filepath.Join("softhsm", "tokens"))
	}
	if !sawDB || !sawToken {
		t.Fatalf("searched %d files but not the database (%v) or the token (%v)", len(haystacks), sawDB, sawToken)
	}
	// The search itself works: each PIN is found in its own file.
	for f, pin := range pins {
		found := false
		for _, h := range haystacks {
			found = found || (strings.HasSuffix(h.name, f) && bytes.Contains(h.data, pin))
		}
		if !found {
			t.Fatalf("self-check: the PIN was not found in %s", f)
		}
	}
	for _, s := range secrets {
		for form, needle := range s.forms() {
			for _, h := range haystacks {
				if bytes.Contains(h.data, needle) {
					t.Errorf("%s (%s) found in %s", s.name, form, h.name)
				}
			}
		}
	}
	for f, pin := range pins {
		if bytes.Contains(logs, pin) {
			t.Errorf("the PIN of %s is in the server logs", f)
		}
	}
	t.Logf("searched %d secrets in %d files and the logs", len(secrets), len(haystacks)-1)
}

type hay struct {
	name string
	data []byte
}

// readTree reads every regular file under dir. PEM and PIN files are included: key
// material has no business there either.
func readTree(t *testing.T, dir string) []hay {
	t.Helper()
	var out []hay
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out = append(out, hay{p, b})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
