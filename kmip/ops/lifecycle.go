package ops

import (
	"context"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/meta"
)

// settle applies the lifecycle transitions that dates make happen by themselves: a
// Pre-Active object whose Activation Date has passed is Active, and an Active (or
// Pre-Active) object whose Deactivation Date has passed is Deactivated. It runs on every
// load, so a stored state is never served stale.
func settle(o *meta.Object, now time.Time) {
	st := kmip14.State(o.State)
	if st == kmip14.StatePreActive && !o.Activation.IsZero() && !o.Activation.After(now) {
		st = kmip14.StateActive
	}
	if (st == kmip14.StateActive || st == kmip14.StatePreActive) && !o.Deactivation.IsZero() && !o.Deactivation.After(now) {
		st = kmip14.StateDeactivated
	}
	o.State = uint32(st)
}

func idPayload(id string) *msg.Node {
	return msg.Struct(kmip14.TagResponsePayload, msg.Text(kmip14.TagUniqueIdentifier, id))
}

// activate moves a Pre-Active object to Active (KMIP Activate).
func (s *Service) activate(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
	id, err := uid(it)
	if err != nil {
		return nil, err
	}
	_, err = s.mutate(ctx, id, func(o *meta.Object) error {
		if st := kmip14.State(o.State); st != kmip14.StatePreActive {
			return kmip.Errorf(kmip14.ResultReasonPermissionDenied, "object %q is %v; only a Pre-Active object can be activated", id, st)
		}
		o.State = uint32(kmip14.StateActive)
		o.Activation = s.now().UTC()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return idPayload(id), nil
}

// revoke deactivates an object, or marks it compromised when the reason says so (KMIP
// Revoke).
func (s *Service) revoke(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
	id, err := uid(it)
	if err != nil {
		return nil, err
	}
	rr := it.Payload.Child(kmip14.TagRevocationReason)
	code := rr.Child(kmip14.TagRevocationReasonCode)
	if code == nil || code.Type != msg.TypeEnumeration {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Revoke needs a Revocation Reason with a code")
	}
	var message string
	if m := rr.Child(kmip14.TagRevocationMessage); m != nil {
		message = m.Text()
	}
	var occurred time.Time
	if d := it.Payload.Child(kmip14.TagCompromiseOccurrenceDate); d != nil && d.Type == msg.TypeDateTime {
		occurred = d.Time()
	}
	reason := kmip14.RevocationReasonCode(code.Int)
	compromise := reason == kmip14.RevocationReasonCodeKeyCompromise || reason == kmip14.RevocationReasonCodeCACompromise
	_, err = s.mutate(ctx, id, func(o *meta.Object) error {
		now := s.now().UTC()
		st := kmip14.State(o.State)
		switch {
		case destroyed(o):
			return kmip.Errorf(kmip14.ResultReasonPermissionDenied, "object %q is destroyed", id)
		case compromise:
			if occurred.IsZero() {
				return kmip.Errorf(kmip14.ResultReasonInvalidField, "a compromise needs a Compromise Occurrence Date")
			}
			o.State = uint32(kmip14.StateCompromised)
			o.Compromise, o.CompromiseOccurrence = now, occurred
		case st == kmip14.StateActive:
			o.State = uint32(kmip14.StateDeactivated)
			o.Deactivation = now
		case st == kmip14.StatePreActive:
			// KMIP's state diagram lets a key that never became active go straight to
			// Deactivated, so it can be destroyed without ever being used.
			o.State = uint32(kmip14.StateDeactivated)
			o.Deactivation = now
		default:
			return kmip.Errorf(kmip14.ResultReasonPermissionDenied, "object %q is %v and cannot be revoked for %v", id, st, reason)
		}
		o.RevocationReason, o.RevocationMessage = uint32(reason), message
		return nil
	})
	if err != nil {
		return nil, err
	}
	return idPayload(id), nil
}

// destroy erases an object's key material; its attributes stay for Get Attributes
// (KMIP Destroy). An Active object must be revoked first.
func (s *Service) destroy(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
	id, err := uid(it)
	if err != nil {
		return nil, err
	}
	_, err = s.mutate(ctx, id, func(o *meta.Object) error {
		switch st := kmip14.State(o.State); st {
		case kmip14.StatePreActive, kmip14.StateDeactivated:
			o.State = uint32(kmip14.StateDestroyed)
		case kmip14.StateCompromised:
			o.State = uint32(kmip14.StateDestroyedCompromised)
		case kmip14.StateActive:
			return kmip.Errorf(kmip14.ResultReasonPermissionDenied, "object %q is Active; revoke it before destroying it", id)
		default:
			return kmip.Errorf(kmip14.ResultReasonItemNotFound, "object %q is already destroyed", id)
		}
		o.Destroyed = s.now().UTC()
		o.Wrapped = nil
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.keys.Forget(id)
	return idPayload(id), nil
}
