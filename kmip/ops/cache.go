package ops

import (
	"sync"

	"github.com/hsmkms/hsmkms/meta"
)

// objectCache keeps recently read objects so that the hot read paths (Get Attributes
// polling, Encrypt, Decrypt, Get) skip SQLite, which costs more than the rest of such
// a request. It holds metadata and wrapped blobs only, never plaintext.
//
// It stays coherent because every write to an object goes through Service.mutate,
// which invalidates the entry after its transaction committed. A reader notes the
// generation before it reads the database and may fill the cache only if no write
// happened in between, so a read that raced a write can never reinstate the old
// object. Grants are not cached: a caller that neither owns the object nor is an
// administrator always goes to the database, so `hsmkms keys grant` from another
// process takes effect at once.
type objectCache struct {
	mu  sync.Mutex
	gen uint64
	max int
	m   map[string]*meta.Object
}

func newObjectCache(max int) *objectCache {
	return &objectCache{max: max, m: make(map[string]*meta.Object, max)}
}

// get returns a private copy of the cached object: callers may change scalar fields
// (settle changes State) but must not change Attrs in place.
func (c *objectCache) get(id string) (*meta.Object, bool) {
	c.mu.Lock()
	o, ok := c.m[id]
	c.mu.Unlock()
	if !ok {
		return nil, false
	}
	cp := *o
	return &cp, true
}

// generation is read before a database read whose result may be cached.
func (c *objectCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// put caches a copy of o if nothing was invalidated since gen.
func (c *objectCache) put(o *meta.Object, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if _, ok := c.m[o.ID]; !ok && len(c.m) >= c.max {
		for k := range c.m { // evict an arbitrary entry: O(1), and fair enough
			delete(c.m, k)
			break
		}
	}
	cp := *o
	c.m[o.ID] = &cp
}

// invalidate drops id and fences out reads that started before.
func (c *objectCache) invalidate(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.m, id)
}
