package ops

import (
	"context"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/meta"
)

// Replicas is what new objects wait for before Create, Register, Re-key
// and Create Key Pair answer (mirror.write_ack). *mirror.Node implements it.
type Replicas interface {
	// Await returns once enough peers hold this appliance's journal through
	// pos, or an error saying why not.
	Await(ctx context.Context, pos int64) error
}

// replicate waits for the replicas to hold objs. When they cannot, the
// objects are destroyed here (and, through the journal, on every peer that
// got them), so a key whose creation the client saw fail is usable nowhere.
func (s *Service) replicate(ctx context.Context, objs []*meta.Object) error {
	if s.replicas == nil {
		return nil
	}
	var pos int64
	for _, o := range objs {
		pos = max(pos, o.Rev.MSeq)
	}
	err := s.replicas.Await(ctx, pos)
	if err == nil {
		return nil
	}
	s.log.WarnContext(ctx, "new objects not acknowledged by mirror peers; destroying them", "err", err, "objects", len(objs))
	for _, o := range objs {
		_, derr := s.mutate(context.WithoutCancel(ctx), o.ID, func(o *meta.Object) error {
			o.State = uint32(kmip14.StateDestroyed)
			o.Destroyed = s.now().UTC()
			o.Wrapped = nil
			return nil
		})
		s.keys.Forget(o.ID)
		if derr != nil {
			s.log.ErrorContext(ctx, "could not destroy an unacknowledged object", "object_id", o.ID, "err", derr)
		}
	}
	return kmip.Errorf(kmip14.ResultReasonGeneralFailure,
		"the new object could not be stored on enough mirror appliances in time (%v); it was not created", err)
}

// Invalidate drops object id from the cache; mirroring calls it after
// applying a peer's change.
func (s *Service) Invalidate(id string) { s.cache.invalidate(id) }

// MaterialKind is the token key kind of o's material.
func MaterialKind(o *meta.Object) hsm.KeyKind {
	if kmip14.ObjectType(o.Type) == kmip14.ObjectTypePrivateKey {
		return privKeyOf(o).Kind
	}
	return keyOf(o).Kind
}
