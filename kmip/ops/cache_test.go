package ops

import (
	"fmt"
	"sync"
	"testing"

	"github.com/hsmkms/hsmkms/meta"
)

func TestObjectCache(t *testing.T) {
	c := newObjectCache(2)
	gen := c.generation()
	c.put(&meta.Object{ID: "a", State: 1}, gen)
	o, ok := c.get("a")
	if !ok || o.State != 1 {
		t.Fatalf("get after put: %v %v", o, ok)
	}
	o.State = 9
	if again, _ := c.get("a"); again.State != 1 {
		t.Fatal("get must return a private copy")
	}

	// A read that started before a write must not fill the cache with what it read.
	stale := c.generation()
	c.invalidate("a")
	c.put(&meta.Object{ID: "a", State: 1}, stale)
	if _, ok := c.get("a"); ok {
		t.Fatal("a read that raced an invalidation reinstated the old object")
	}

	gen = c.generation()
	for i := range 5 {
		c.put(&meta.Object{ID: fmt.Sprint(i)}, gen)
	}
	if n := len(c.m); n != 2 {
		t.Fatalf("cache holds %d objects, bound is 2", n)
	}
}

func TestObjectCacheConcurrent(t *testing.T) {
	c := newObjectCache(64)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				id := fmt.Sprint((w + i) % 100)
				if i%7 == 0 {
					c.invalidate(id)
					continue
				}
				gen := c.generation()
				c.put(&meta.Object{ID: id}, gen)
				c.get(id)
			}
		}()
	}
	wg.Wait()
}
