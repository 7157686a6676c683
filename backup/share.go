package backup

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"golang.org/x/crypto/scrypt"

	"github.com/hsmkms/hsmkms/backup/shamir"
	"github.com/hsmkms/hsmkms/hsm"
)

// Share file format: JSON, one custodian's Shamir share of the backup secret
// encrypted with AES-256-GCM under a key derived from the custodian's
// passphrase with scrypt. Every other field is authenticated as additional
// data, so a changed index, threshold or fingerprint fails to open.
const (
	shareFormat  = "hsmkms-kek-share"
	shareVersion = 1
	// MinPassphrase is the shortest passphrase a share accepts.
	MinPassphrase = 12
	// scrypt cost: about 0.1 s and 32 MiB per share on a small machine.
	scryptN, scryptR, scryptP = 1 << 15, 8, 1
)

// custodianName keeps custodian names usable as file names.
var custodianName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// CheckCustodian reports whether name can name a custodian (and a file).
func CheckCustodian(name string) error {
	if !custodianName.MatchString(name) {
		return fmt.Errorf("%w: custodian name %q: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", ErrShare, name)
	}
	return nil
}

// ShareInfo describes one share; all of it is stored in the clear.
type ShareInfo struct {
	Custodian   string    `json:"custodian"`
	Index       int       `json:"index"` // the Shamir coordinate, 1..Shares
	Threshold   int       `json:"threshold"`
	Shares      int       `json:"shares"`
	Fingerprint string    `json:"fingerprint"` // of the backup secret, as in backup headers
	ApplianceID string    `json:"appliance_id"`
	Created     time.Time `json:"created"`
}

// kdf records the scrypt parameters of a share.
type kdf struct {
	Name string `json:"name"`
	N    int    `json:"n"`
	R    int    `json:"r"`
	P    int    `json:"p"`
	Salt []byte `json:"salt"`
}

// shareFile is the file's JSON.
type shareFile struct {
	Format     string    `json:"format"`
	Version    int       `json:"version"`
	Info       ShareInfo `json:"share"`
	KDF        kdf       `json:"kdf"`
	Nonce      []byte    `json:"nonce"`
	Ciphertext []byte    `json:"ciphertext,omitempty"`
}

// aad is the authenticated part: the whole file but the ciphertext.
func (f shareFile) aad() []byte {
	f.Ciphertext = nil
	b, _ := json.Marshal(f) // a struct of plain fields always marshals
	return b
}

func (k kdf) key(passphrase []byte) ([]byte, error) {
	if k.Name != "scrypt" || k.N < 1<<14 || k.N > 1<<20 || k.R < 1 || k.R > 32 || k.P < 1 || k.P > 16 || len(k.Salt) < 16 {
		return nil, fmt.Errorf("%w: unsupported key derivation %s N=%d r=%d p=%d", ErrShare, k.Name, k.N, k.R, k.P)
	}
	return scrypt.Key(passphrase, k.Salt, k.N, k.R, k.P, 32)
}

// SplitSecret splits a backup secret into one share per custodian, any
// threshold of which rebuild it.
func SplitSecret(secret []byte, threshold int, custodians []string) ([]shamir.Share, error) {
	seen := map[string]bool{}
	for _, c := range custodians {
		if err := CheckCustodian(c); err != nil {
			return nil, err
		}
		if seen[c] {
			return nil, fmt.Errorf("%w: custodian %q named twice", ErrShare, c)
		}
		seen[c] = true
	}
	shares, err := shamir.Split(secret, len(custodians), threshold, rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrShare, err)
	}
	return shares, nil
}

// SealShare encrypts share y for info.Custodian under passphrase and returns
// the share file's contents.
func SealShare(info ShareInfo, y, passphrase []byte) ([]byte, error) {
	if len(passphrase) < MinPassphrase {
		return nil, fmt.Errorf("%w: the passphrase of %s is shorter than %d bytes", ErrShare, info.Custodian, MinPassphrase)
	}
	f := shareFile{Format: shareFormat, Version: shareVersion, Info: info,
		KDF: kdf{Name: "scrypt", N: scryptN, R: scryptR, P: scryptP, Salt: make([]byte, 16)}, Nonce: make([]byte, 12)}
	if _, err := rand.Read(f.KDF.Salt); err != nil {
		return nil, fmt.Errorf("seal share of %s: %w", info.Custodian, err)
	}
	if _, err := rand.Read(f.Nonce); err != nil {
		return nil, fmt.Errorf("seal share of %s: %w", info.Custodian, err)
	}
	gcm, err := shareCipher(f.KDF, passphrase)
	if err != nil {
		return nil, fmt.Errorf("seal share of %s: %w", info.Custodian, err)
	}
	f.Ciphertext = gcm.Seal(nil, f.Nonce, y, f.aad())
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("seal share of %s: %w", info.Custodian, err)
	}
	return append(b, '\n'), nil
}

// ReadShareInfo returns the clear part of a share file, to find out whose
// passphrase opens it. Nothing is authenticated yet.
func ReadShareInfo(data []byte) (ShareInfo, error) {
	f, err := parseShare(data)
	if err != nil {
		return ShareInfo{}, err
	}
	return f.Info, nil
}

func parseShare(data []byte) (shareFile, error) {
	var f shareFile
	if err := strictJSON(data, &f); err != nil {
		return shareFile{}, fmt.Errorf("%w: not a share file: %v", ErrShare, err)
	}
	if f.Format != shareFormat || f.Version != shareVersion {
		return shareFile{}, fmt.Errorf("%w: format %q version %d (want %s version %d)", ErrShare, f.Format, f.Version, shareFormat, shareVersion)
	}
	return f, nil
}

// OpenShare decrypts a share file with passphrase. A wrong passphrase and a
// changed file look the same: ErrShare.
func OpenShare(data, passphrase []byte) (ShareInfo, []byte, error) {
	f, err := parseShare(data)
	if err != nil {
		return ShareInfo{}, nil, err
	}
	gcm, err := shareCipher(f.KDF, passphrase)
	if err != nil {
		return ShareInfo{}, nil, err
	}
	if len(f.Nonce) != gcm.NonceSize() {
		return ShareInfo{}, nil, fmt.Errorf("%w: nonce of %d bytes", ErrShare, len(f.Nonce))
	}
	y, err := gcm.Open(nil, f.Nonce, f.Ciphertext, f.aad())
	if err != nil {
		return ShareInfo{}, nil, fmt.Errorf("%w: the share of %s does not open: wrong passphrase, or the file was changed", ErrShare, f.Info.Custodian)
	}
	return f.Info, y, nil
}

func shareCipher(k kdf, passphrase []byte) (cipher.AEAD, error) {
	key, err := k.key(passphrase)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// CombineShares rebuilds the backup secret from opened shares. It refuses
// fewer shares than their threshold, shares of different secrets or repeated
// indexes, and checks the result against the fingerprint (Shamir itself
// cannot tell a wrong share). The caller clears the result.
func CombineShares(infos []ShareInfo, ys [][]byte) ([]byte, error) {
	if len(infos) == 0 || len(infos) != len(ys) {
		return nil, fmt.Errorf("%w: no shares given", ErrTooFewShares)
	}
	first := infos[0]
	parts := make([]shamir.Share, len(infos))
	seen := map[int]string{}
	for i, in := range infos {
		if in.Fingerprint != first.Fingerprint || in.Threshold != first.Threshold || in.Shares != first.Shares {
			return nil, fmt.Errorf("%w: the share of %s is for backup secret %s (%d of %d), the share of %s for %s (%d of %d): they do not belong together",
				ErrShare, in.Custodian, in.Fingerprint, in.Threshold, in.Shares, first.Custodian, first.Fingerprint, first.Threshold, first.Shares)
		}
		if other, dup := seen[in.Index]; dup {
			return nil, fmt.Errorf("%w: %s and %s hold the same share (index %d)", ErrShare, other, in.Custodian, in.Index)
		}
		if in.Index < 1 || in.Index > 255 {
			return nil, fmt.Errorf("%w: share index %d", ErrShare, in.Index)
		}
		seen[in.Index] = in.Custodian
		parts[i] = shamir.Share{X: byte(in.Index), Y: ys[i]}
	}
	if len(infos) < first.Threshold {
		return nil, fmt.Errorf("%w: %d shares given, the threshold is %d: %d more custodians must bring theirs",
			ErrTooFewShares, len(infos), first.Threshold, first.Threshold-len(infos))
	}
	secret, err := shamir.Combine(parts)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrShare, err)
	}
	fp, err := hsm.BackupFingerprint(secret)
	if err != nil || fp != first.Fingerprint {
		clear(secret)
		return nil, fmt.Errorf("%w: the shares rebuild a secret whose fingerprint is not %s: one of them is wrong", ErrShare, first.Fingerprint)
	}
	return secret, nil
}
