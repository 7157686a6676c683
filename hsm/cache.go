package hsm

import (
	"container/list"
	"crypto/sha256"
	"sync"

	"github.com/miekg/pkcs11"
)

// fingerprint identifies the wrapped form a cached handle came from, so a
// key ID whose blob or KEK changed never reuses the old handle.
func fingerprint(k Key) [32]byte {
	h := sha256.New()
	h.Write([]byte(k.Wrapped.KEK))
	h.Write([]byte{0, byte(k.Kind)})
	h.Write(k.Wrapped.Blob)
	var fp [32]byte
	h.Sum(fp[:0])
	return fp
}

// entry is one unwrapped session object. refs counts callers using the
// handle right now: an entry evicted while in use is destroyed by the last
// release, never under a running C_Encrypt.
type entry struct {
	id     string
	fp     [32]byte
	h      pkcs11.ObjectHandle
	refs   int
	gone   bool // out of the index; destroy at the last release
	orphan bool // the token already dropped the object; never destroy it
	el     *list.Element
}

// handleCache is a bounded LRU of unwrapped key handles keyed by key ID.
// It does no PKCS#11 calls itself: methods return the handles the caller
// must destroy, so the lock is never held across a token call.
type handleCache struct {
	mu   sync.Mutex
	max  int
	lru  *list.List // front is most recent; values are *entry
	byID map[string]*entry
}

func newHandleCache(max int) *handleCache {
	return &handleCache{max: max, lru: list.New(), byID: make(map[string]*entry)}
}

// get returns a referenced entry for id with fingerprint fp, or nil. A
// stale entry for id (other fingerprint) is evicted.
func (c *handleCache) get(id string, fp [32]byte) (*entry, []pkcs11.ObjectHandle) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byID[id]
	if !ok {
		return nil, nil
	}
	if e.fp != fp {
		return nil, c.unlink(e)
	}
	e.refs++
	c.lru.MoveToFront(e.el)
	return e, nil
}

// add caches h for id and returns it referenced, plus the handles evicted to
// make room (or replaced, when a concurrent miss added id first).
func (c *handleCache) add(id string, fp [32]byte, h pkcs11.ObjectHandle) (*entry, []pkcs11.ObjectHandle) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var victims []pkcs11.ObjectHandle
	if old, ok := c.byID[id]; ok {
		victims = append(victims, c.unlink(old)...)
	}
	e := &entry{id: id, fp: fp, h: h, refs: 1}
	e.el = c.lru.PushFront(e)
	c.byID[id] = e
	for c.lru.Len() > c.max {
		victims = append(victims, c.unlink(c.lru.Back().Value.(*entry))...)
	}
	return e, victims
}

// release drops a reference; it returns the handle to destroy when e was
// evicted and this was its last user.
func (c *handleCache) release(e *entry) (pkcs11.ObjectHandle, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refs--
	if e.refs == 0 && e.gone && !e.orphan {
		return e.h, true
	}
	return 0, false
}

// remove evicts id (Forget) and returns what can be destroyed now.
func (c *handleCache) remove(id string) []pkcs11.ObjectHandle {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byID[id]; ok {
		return c.unlink(e)
	}
	return nil
}

// orphan forgets e without ever destroying its handle: the token reported
// the handle invalid, and the number may already name another object.
func (c *handleCache) orphan(e *entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.orphan = true
	if !e.gone {
		c.unlink(e)
	}
}

// orphanAll empties the cache after the token lost its session objects
// (session loss or logout); no handle is destroyed.
func (c *handleCache) orphanAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.byID {
		e.orphan = true
		c.unlink(e)
	}
}

// len reports the number of cached handles.
func (c *handleCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// unlink removes e from the index and returns its handle if nobody uses it.
func (c *handleCache) unlink(e *entry) []pkcs11.ObjectHandle {
	e.gone = true
	c.lru.Remove(e.el)
	delete(c.byID, e.id)
	if e.refs == 0 && !e.orphan {
		return []pkcs11.ObjectHandle{e.h}
	}
	return nil
}
