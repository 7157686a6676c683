package hsm

import (
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"

	"github.com/miekg/pkcs11"
)

// Stats is a snapshot of a Token's use, for metrics.
type Stats struct {
	Sessions      int // size of the session pool
	SessionsInUse int // pooled sessions held by running operations
	// Errors counts the PKCS#11 return values (by CKR name, e.g.
	// "CKR_SESSION_HANDLE_INVALID") that operations failed with since Open.
	Errors map[string]uint64
}

// Stats returns the current use of the session pool and the errors seen so far.
func (t *Token) Stats() Stats {
	return Stats{
		Sessions:      cap(t.pool),
		SessionsInUse: cap(t.pool) - len(t.pool),
		Errors:        t.errs.snapshot(),
	}
}

// errorCounts counts failed operations by the PKCS#11 return value in their error.
type errorCounts struct {
	mu sync.Mutex
	n  map[string]uint64
}

// count records err if it carries a pkcs11.Error; other errors (context, input
// checks) are not the token's.
func (c *errorCounts) count(err error) {
	var rv pkcs11.Error
	if !errors.As(err, &rv) {
		return
	}
	name := ckrName(rv)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]uint64{}
	}
	c.n[name]++
}

func (c *errorCounts) snapshot() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.n)
}

// ckrName is the return value's name, e.g. CKR_DEVICE_REMOVED. pkcs11.Error prints
// it after the hex code ("pkcs11: 0x32: CKR_DEVICE_REMOVED") and exports no other way
// to get it; a code the library does not know is named by its number.
func ckrName(rv pkcs11.Error) string {
	s := rv.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && strings.HasPrefix(s[i+2:], "CKR_") {
		return s[i+2:]
	}
	return fmt.Sprintf("CKR_0x%X", uint(rv))
}
