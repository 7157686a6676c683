package ops

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/meta"
)

// caller is who sends the request; admin means its role acts on every object.
type caller struct {
	identity string
	admin    bool
}

func (s *Service) caller(ctx context.Context) caller {
	p := kmip.PeerFrom(ctx)
	if p == nil {
		return caller{}
	}
	return caller{identity: p.Identity, admin: s.policy.roleOf(p).spec.AllObjects}
}

// uid is the request's Unique Identifier, or the batch's ID placeholder.
func uid(it *kmip.Item) (string, error) {
	if n := it.Payload.Child(kmip14.TagUniqueIdentifier); n != nil {
		if n.Type != msg.TypeTextString {
			return "", kmip.Errorf(kmip14.ResultReasonInvalidField, "Unique Identifier must be a Text String")
		}
		return n.Text(), nil
	}
	if it.Placeholder != "" {
		return it.Placeholder, nil
	}
	return "", kmip.Errorf(kmip14.ResultReasonMissingData, "no Unique Identifier in the request and no ID placeholder in the batch")
}

// load fetches an object the caller may act on. A caller that neither owns the object,
// was granted it, nor is an administrator gets Permission Denied.
func load(tx *meta.Tx, c caller, id string, now time.Time) (*meta.Object, error) {
	o, err := tx.Get(id)
	if errors.Is(err, meta.ErrNotFound) {
		return nil, kmip.Errorf(kmip14.ResultReasonItemNotFound, "object %q not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("load object %q: %w", id, err)
	}
	settle(o, now)
	if c.admin || o.Owner == c.identity {
		return o, nil
	}
	ok, err := tx.Granted(id, c.identity)
	if err != nil {
		return nil, fmt.Errorf("check grant on %q: %w", id, err)
	}
	if !ok {
		return nil, kmip.Errorf(kmip14.ResultReasonPermissionDenied, "%q may not access object %q", c.identity, id)
	}
	return o, nil
}

// view loads one object for reading, from the cache when the caller may see it there.
func (s *Service) view(ctx context.Context, id string) (*meta.Object, error) {
	c := s.caller(ctx)
	now := s.now()
	if o, ok := s.cache.get(id); ok && (c.admin || o.Owner == c.identity) {
		settle(o, now)
		return o, nil
	}
	gen := s.cache.generation()
	var o *meta.Object
	err := s.store.View(ctx, func(tx *meta.Tx) error {
		var err error
		o, err = load(tx, c, id, now)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.cache.put(o, gen)
	return o, nil
}

// mutate loads an object, lets fn change it and writes it back with a new Last Change
// Date, all in one transaction.
func (s *Service) mutate(ctx context.Context, id string, fn func(o *meta.Object) error) (*meta.Object, error) {
	c := s.caller(ctx)
	var out *meta.Object
	err := s.store.Update(ctx, func(tx *meta.Tx) error {
		o, err := load(tx, c, id, s.now())
		if err != nil {
			return err
		}
		if err := fn(o); err != nil {
			return err
		}
		o.Updated = s.now().UTC()
		out = o
		return tx.Put(o)
	})
	// Whether or not it committed, the cached copy may no longer be the truth.
	s.cache.invalidate(id)
	return out, err
}

// newID returns a random RFC 4122 version 4 UUID.
func newID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate identifier: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}

// keyOf names an object's material for the token: a Symmetric Key by its algorithm
// (see symmetricKind), anything else as secret data.
func keyOf(o *meta.Object) hsm.Key {
	kind := hsm.KindSecret
	if kmip14.ObjectType(o.Type) == kmip14.ObjectTypeSymmetricKey {
		kind = symmetricKind(o)
	}
	return hsm.Key{ID: o.ID, Kind: kind, Wrapped: hsm.Wrapped{Blob: o.Wrapped, KEK: o.KEK}}
}

// isAES reports whether o is an AES key the token can compute with.
func isAES(o *meta.Object) bool {
	return kmip14.ObjectType(o.Type) == kmip14.ObjectTypeSymmetricKey && symmetricKind(o) == hsm.KindAES
}

func destroyed(o *meta.Object) bool {
	st := kmip14.State(o.State)
	return st == kmip14.StateDestroyed || st == kmip14.StateDestroyedCompromised
}
