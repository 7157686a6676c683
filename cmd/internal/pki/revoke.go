package pki

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// RevokedName is the revocation list's name inside DIR/pki: one certificate serial
// per line in hexadecimal, as `certs list` prints them; blank lines and lines starting
// with # are ignored.
const RevokedName = "revoked.txt"

// Revoke adds serials to the revocation list at path and returns the ones that were
// not listed yet. The file is replaced atomically (written aside, synced, renamed)
// with mode 0600, so a server reading it sees the old list or the new one.
func Revoke(path string, serials ...*big.Int) (added []*big.Int, err error) {
	listed, err := ReadRevoked(path)
	if err != nil {
		return nil, err
	}
	for _, s := range serials {
		if s == nil || s.Sign() <= 0 {
			return nil, fmt.Errorf("revoke certificate: serial %v is not a positive number", s)
		}
		if hex := s.Text(16); !listed[hex] {
			listed[hex] = true
			added = append(added, s)
		}
	}
	if len(added) == 0 {
		return nil, nil
	}
	lines := make([]string, 0, len(listed))
	for hex := range listed {
		lines = append(lines, hex)
	}
	slices.Sort(lines)
	var b bytes.Buffer
	b.WriteString("# certificate serials (hex) the server refuses; written by `hsmkms certs revoke`\n")
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	if err := replaceFile(path, b.Bytes(), 0o600); err != nil {
		return nil, fmt.Errorf("revoke certificate: %w", err)
	}
	return added, nil
}

// ParseSerial reads a serial as `certs list` prints it (hexadecimal, optionally with
// a 0x prefix or colons between bytes).
func ParseSerial(s string) (*big.Int, error) {
	clean := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(strings.TrimSpace(s), "0x"), ":", ""))
	n, ok := new(big.Int).SetString(clean, 16)
	if !ok || n.Sign() <= 0 {
		return nil, fmt.Errorf("parse serial %q: want a positive hexadecimal number as `hsmkms certs list` prints", s)
	}
	return n, nil
}

// readRevoked returns the serials listed at path (lowercase hex); a missing file is an
// empty list.
func ReadRevoked(path string) (map[string]bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read revocation list: %w", err)
	}
	out := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s, err := ParseSerial(line)
		if err != nil {
			return nil, fmt.Errorf("read revocation list %s line %d: %w", path, n, err)
		}
		out[s.Text(16)] = true
	}
	return out, nil
}

// replaceFile writes data to a temporary file beside path and renames it over path.
func replaceFile(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // fails harmlessly after the rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// RevocationList answers whether a client certificate is revoked. It reads the file
// again whenever its modification time or size changed, so `certs revoke` takes
// effect on the next handshake without a restart. It is safe for concurrent use.
type RevocationList struct {
	path string
	log  *slog.Logger

	mu      sync.Mutex
	mtime   time.Time
	size    int64
	serials map[string]bool
}

// NewRevocationList watches path; log (nil: discard) hears of reloads and of a file
// that cannot be read, in which case the last list read stays in force.
func NewRevocationList(path string, log *slog.Logger) *RevocationList {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &RevocationList{path: path, log: log, serials: map[string]bool{}}
}

// Revoked reports whether cert's serial is listed. It costs one stat per call.
func (l *RevocationList) Revoked(cert *x509.Certificate) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refreshLocked()
	return cert != nil && cert.SerialNumber != nil && l.serials[cert.SerialNumber.Text(16)]
}

// refreshLocked rereads the file if it changed; l.mu is held.
func (l *RevocationList) refreshLocked() {
	fi, err := os.Stat(l.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if len(l.serials) > 0 {
			l.log.Warn("revocation list removed: no certificate is revoked now", "path", l.path)
		}
		l.serials, l.mtime, l.size = map[string]bool{}, time.Time{}, 0
		return
	case err != nil:
		l.log.Error("revocation list unreadable: keeping the last one", "path", l.path, "err", err)
		return
	case fi.ModTime().Equal(l.mtime) && fi.Size() == l.size:
		return
	}
	serials, err := ReadRevoked(l.path)
	if err != nil {
		l.log.Error("revocation list unreadable: keeping the last one", "path", l.path, "err", err)
		return
	}
	l.serials, l.mtime, l.size = serials, fi.ModTime(), fi.Size()
	l.log.Info("revocation list loaded", "path", l.path, "revoked", len(serials))
}
