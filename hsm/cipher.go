package hsm

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/rand"
	"fmt"

	"github.com/miekg/pkcs11"
)

// Mode is a block cipher mode of AES.
type Mode int

// Modes.
const (
	ModeCBC Mode = iota + 1
	ModeECB
	ModeCTR
	ModeGCM
)

func (m Mode) String() string {
	switch m {
	case ModeCBC:
		return "CBC"
	case ModeECB:
		return "ECB"
	case ModeCTR:
		return "CTR"
	case ModeGCM:
		return "GCM"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// CipherRequest is one Encrypt or Decrypt call.
type CipherRequest struct {
	Key    Key
	Mode   Mode
	Pad    bool   // PKCS#7 padding for CBC and ECB; ignored for CTR and GCM
	IV     []byte // Encrypt: nil means a fresh random IV (16 bytes CBC/CTR, 12 GCM); Decrypt: required except ECB
	AAD    []byte // GCM additional data
	TagLen int    // GCM tag length in bytes; 0 means 16 (Decrypt: 0 means len(Tag))
	Tag    []byte // GCM Decrypt: the tag
	Data   []byte
}

// CipherResult is the output of Encrypt: GCM returns the tag apart from the
// ciphertext; IV is the IV used (generated when the request had none).
type CipherResult struct {
	Data, IV, Tag []byte
}

const (
	gcmIVLen  = 12
	maxIVLen  = 256
	maxRandom = 1 << 20
)

// validTagLen lists the GCM tag lengths NIST SP 800-38D allows.
func validTagLen(n int) bool {
	return n == 4 || n == 8 || (n >= 12 && n <= 16)
}

// check validates r for encryption (enc) or decryption and returns the tag
// length for GCM.
func (r CipherRequest) check(enc bool) (tagLen int, err error) {
	aligned := len(r.Data)%aes.BlockSize == 0
	switch r.Mode {
	case ModeCBC, ModeCTR:
		if (r.IV != nil || !enc) && len(r.IV) != aes.BlockSize {
			return 0, fmt.Errorf("%s IV of %d bytes (want %d): %w", r.Mode, len(r.IV), aes.BlockSize, ErrInvalidInput)
		}
	case ModeECB:
		if len(r.IV) != 0 {
			return 0, fmt.Errorf("ECB takes no IV: %w", ErrInvalidInput)
		}
	case ModeGCM:
		if (r.IV != nil || !enc) && (len(r.IV) < 1 || len(r.IV) > maxIVLen) {
			return 0, fmt.Errorf("GCM IV of %d bytes: %w", len(r.IV), ErrInvalidInput)
		}
		tagLen = r.TagLen
		if tagLen == 0 {
			tagLen = 16
			if !enc {
				tagLen = len(r.Tag)
			}
		}
		if !validTagLen(tagLen) || (!enc && len(r.Tag) != tagLen) {
			return 0, fmt.Errorf("GCM tag of %d bytes (length %d): %w", len(r.Tag), tagLen, ErrInvalidInput)
		}
		return tagLen, nil
	default:
		return 0, fmt.Errorf("cipher mode %d: %w", int(r.Mode), ErrInvalidInput)
	}
	switch {
	case r.Mode == ModeCTR && len(r.Data) == 0:
		return 0, fmt.Errorf("CTR of empty data: %w", ErrInvalidInput)
	case (r.Mode == ModeCBC || r.Mode == ModeECB) && (!enc || !r.Pad) && (!aligned || len(r.Data) == 0):
		return 0, fmt.Errorf("%s data of %d bytes is not a positive multiple of %d: %w", r.Mode, len(r.Data), aes.BlockSize, ErrInvalidInput)
	}
	return 0, nil
}

// mechanism builds the PKCS#11 mechanism; free releases GCM parameter memory
// after the operation.
func mechanism(r CipherRequest, iv []byte, tagLen int) (m []*pkcs11.Mechanism, free func()) {
	switch r.Mode {
	case ModeCBC:
		if r.Pad {
			return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_CBC_PAD, iv)}, func() {}
		}
		return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_CBC, iv)}, func() {}
	case ModeCTR:
		// CK_AES_CTR_PARAMS: CK_ULONG ulCounterBits, then the counter block.
		// The whole block counts, as in crypto/cipher's CTR. NewAttribute
		// encodes a uint as a native CK_ULONG.
		bits := pkcs11.NewAttribute(0, uint(128)).Value
		return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_CTR, append(bits, iv...))}, func() {}
	case ModeGCM:
		p := pkcs11.NewGCMParams(iv, r.AAD, tagLen*8)
		return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, p)}, p.Free
	}
	return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_ECB, nil)}, func() {}
}

// Encrypt encrypts r.Data under r.Key inside the token. The unwrapped key
// handle is cached (see Forget).
func (t *Token) Encrypt(ctx context.Context, r CipherRequest) (res CipherResult, err error) {
	tagLen, err := r.check(true)
	if err == nil {
		err = t.checkKey(r.Key)
	}
	if err != nil {
		return CipherResult{}, fmt.Errorf("encrypt with key %s: %w", r.Key.ID, err)
	}
	if err := t.begin(); err != nil {
		return CipherResult{}, err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return CipherResult{}, fmt.Errorf("encrypt with key %s: %w", r.Key.ID, err)
	}
	defer func() { t.release(s, err) }()
	if res, err = t.encrypt(s, r, tagLen); err != nil {
		return CipherResult{}, fmt.Errorf("encrypt with key %s: %w", r.Key.ID, err)
	}
	return res, nil
}

func (t *Token) encrypt(s *session, r CipherRequest, tagLen int) (res CipherResult, err error) {
	e, err := t.useKey(s, r.Key)
	if err != nil {
		return CipherResult{}, err
	}
	defer t.unuse(e, &err)
	iv := r.IV
	if iv == nil && r.Mode != ModeECB {
		n := aes.BlockSize
		if r.Mode == ModeGCM {
			n = gcmIVLen
		}
		// An IV must be unpredictable, not secret, so the operating system's CSPRNG
		// serves: it costs a fraction of a C_GenerateRandom round trip into the token,
		// which was a fifth of the token time of a small Encrypt.
		iv = make([]byte, n)
		if _, err = rand.Read(iv); err != nil {
			return CipherResult{}, fmt.Errorf("generate IV: %w", err)
		}
	}
	data := r.Data
	if r.Mode == ModeECB && r.Pad {
		data = pad(data)
	}
	mech, free := mechanism(r, iv, tagLen)
	defer free()
	if err = t.p11.EncryptInit(s.h, mech, e.h); err != nil {
		return CipherResult{}, mapErr(err, opOther)
	}
	out, err := t.p11.Encrypt(s.h, data)
	if err != nil {
		return CipherResult{}, mapErr(err, opOther)
	}
	res = CipherResult{Data: out, IV: iv}
	if r.Mode == ModeGCM {
		if len(out) < tagLen {
			return CipherResult{}, fmt.Errorf("GCM output of %d bytes: %w", len(out), ErrTokenUnavailable)
		}
		res.Data, res.Tag = out[:len(out)-tagLen], out[len(out)-tagLen:]
	}
	return res, nil
}

// Decrypt decrypts r.Data under r.Key inside the token. A wrong tag or bad
// padding yields ErrBadCiphertext.
func (t *Token) Decrypt(ctx context.Context, r CipherRequest) (plain []byte, err error) {
	tagLen, err := r.check(false)
	if err == nil {
		err = t.checkKey(r.Key)
	}
	if err != nil {
		return nil, fmt.Errorf("decrypt with key %s: %w", r.Key.ID, err)
	}
	if err := t.begin(); err != nil {
		return nil, err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("decrypt with key %s: %w", r.Key.ID, err)
	}
	defer func() { t.release(s, err) }()
	if plain, err = t.decrypt(s, r, tagLen); err != nil {
		return nil, fmt.Errorf("decrypt with key %s: %w", r.Key.ID, err)
	}
	return plain, nil
}

func (t *Token) decrypt(s *session, r CipherRequest, tagLen int) (plain []byte, err error) {
	e, err := t.useKey(s, r.Key)
	if err != nil {
		return nil, err
	}
	defer t.unuse(e, &err)
	data := r.Data
	if r.Mode == ModeGCM {
		// The token wants ciphertext||tag.
		data = append(append(make([]byte, 0, len(r.Data)+len(r.Tag)), r.Data...), r.Tag...)
	}
	mech, free := mechanism(r, r.IV, tagLen)
	defer free()
	if err = t.p11.DecryptInit(s.h, mech, e.h); err != nil {
		return nil, mapErr(err, opOther)
	}
	out, err := t.p11.Decrypt(s.h, data)
	if err != nil {
		return nil, mapErr(err, opDecrypt)
	}
	if r.Mode == ModeECB && r.Pad {
		return unpad(out)
	}
	return out, nil
}

// pad applies PKCS#7 padding to a copy of data.
func pad(data []byte) []byte {
	n := aes.BlockSize - len(data)%aes.BlockSize
	return append(append(make([]byte, 0, len(data)+n), data...), bytes.Repeat([]byte{byte(n)}, n)...)
}

// unpad removes PKCS#7 padding.
func unpad(data []byte) ([]byte, error) {
	if len(data) == 0 || len(data)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("padded data of %d bytes: %w", len(data), ErrBadCiphertext)
	}
	n := int(data[len(data)-1])
	if n < 1 || n > aes.BlockSize {
		return nil, fmt.Errorf("bad padding: %w", ErrBadCiphertext)
	}
	for _, b := range data[len(data)-n:] {
		if int(b) != n {
			return nil, fmt.Errorf("bad padding: %w", ErrBadCiphertext)
		}
	}
	return data[:len(data)-n], nil
}

// Random returns n random bytes from the token (C_GenerateRandom), n in
// 1..1 MiB.
func (t *Token) Random(ctx context.Context, n int) (out []byte, err error) {
	if n < 1 || n > maxRandom {
		return nil, fmt.Errorf("generate %d random bytes: %w", n, ErrInvalidInput)
	}
	if err := t.begin(); err != nil {
		return nil, err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("generate %d random bytes: %w", n, err)
	}
	defer func() { t.release(s, err) }()
	if out, err = t.p11.GenerateRandom(s.h, n); err != nil {
		err = mapErr(err, opOther)
		return nil, fmt.Errorf("generate %d random bytes: %w", n, err)
	}
	return out, nil
}
