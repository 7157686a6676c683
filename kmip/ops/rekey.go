package ops

import (
	"context"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/meta"
)

// reKey generates a replacement for a symmetric key (KMIP Re-key). The replacement
// copies the old key's attributes except those the specification has the server set
// anew (identifier, dates, state, digest, usage counts, revocation), takes over its
// Names, and the two are linked: Replacement Object Link on the old key, Replaced
// Object Link on the new one. The old key's state does not change; clients revoke it
// when they are done with it.
//
// Dates: without an Offset the old key's Activation, Process Start, Protect Stop and
// Deactivation Dates are copied. With an Offset the new Activation Date is now plus
// the Offset, and the other three keep their distance from it.
func (s *Service) reKey(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
	id, err := uid(it)
	if err != nil {
		return nil, err
	}
	var offset *time.Duration
	if n := it.Payload.Child(kmip14.TagOffset); n != nil {
		if n.Type != msg.TypeInterval {
			return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Offset must be an Interval")
		}
		d := time.Duration(n.Int) * time.Second
		offset = &d
	}
	in, err := s.withTemplates(ctx, it.Payload.Child(kmip14.TagTemplateAttribute))
	if err != nil {
		return nil, err
	}
	old, err := s.view(ctx, id)
	if err != nil {
		return nil, err
	}
	if kmip14.ObjectType(old.Type) != kmip14.ObjectTypeSymmetricKey {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Re-key replaces Symmetric Keys; object %q is a %v", id, kmip14.ObjectType(old.Type))
	}
	if destroyed(old) {
		return nil, kmip.Errorf(kmip14.ResultReasonPermissionDenied, "object %q is destroyed", id)
	}
	nu := replacement(old)
	// Attributes the request gives replace the copied single-valued ones.
	for _, a := range in {
		if !specs[a.name].multi {
			kept := nu.Attrs[:0:0]
			for _, x := range nu.Attrs {
				if x.Name != a.name {
					kept = append(kept, x)
				}
			}
			nu.Attrs = kept
		}
	}
	if err := applyAttrs(nu, in, it.Version); err != nil {
		return nil, err
	}
	w, digest, err := s.generate(ctx, nu)
	if err != nil {
		return nil, err
	}
	nu.Wrapped, nu.KEK = w.Blob, w.KEK
	now := s.now().UTC()
	if offset != nil && !old.Activation.IsZero() {
		shift := func(t time.Time) time.Time {
			if t.IsZero() {
				return t
			}
			return t.Add(now.Add(*offset).Sub(old.Activation))
		}
		nu.Activation = now.Add(*offset)
		nu.Deactivation = shift(old.Deactivation)
		for _, name := range []string{attrProcessStart, attrProtectStop} {
			if d := genericDate(old, name); !d.IsZero() {
				setGeneric(nu, name, 0, dateVal(shift(d)))
			}
		}
	} else if offset != nil {
		nu.Activation = now.Add(*offset)
	}
	setGeneric(nu, "Link", nextIndex(nu, "Link"), linkVal(kmip14.LinkTypeReplacedObjectLink, id))
	if err := s.finishNew(ctx, nu, digest, true, it.Version); err != nil {
		return nil, err
	}
	// The old key hands its Names over and points at its replacement.
	if _, err := s.mutate(ctx, id, func(o *meta.Object) error {
		kept := o.Attrs[:0:0]
		for _, a := range o.Attrs {
			if a.Name != attrName {
				kept = append(kept, a)
			}
		}
		o.Attrs = kept
		setGeneric(o, "Link", nextIndex(o, "Link"), linkVal(kmip14.LinkTypeReplacementObjectLink, nu.ID))
		return nil
	}); err != nil {
		return nil, err
	}
	return msg.Struct(kmip14.TagResponsePayload, msg.Text(kmip14.TagUniqueIdentifier, nu.ID)), nil
}

// replacement is a new object carrying what Re-key copies from old.
func replacement(old *meta.Object) *meta.Object {
	nu := &meta.Object{Type: old.Type, Algorithm: old.Algorithm, Length: old.Length, UsageMask: old.UsageMask,
		Format: old.Format, Activation: old.Activation, Deactivation: old.Deactivation}
	for _, a := range old.Attrs {
		switch a.Name {
		case attrDigest, attrFresh, attrRNG, attrAlwaysSensitive, attrNeverExtractable, attrOriginalCreation, "Link":
			continue // the server sets these anew
		}
		nu.Attrs = append(nu.Attrs, a)
	}
	startUsageLimits(nu)
	return nu
}

// nextIndex is the index a new instance of a multi-valued attribute gets.
func nextIndex(o *meta.Object, name string) int {
	n := 0
	for _, a := range o.Attrs {
		if a.Name == name && a.Index >= n {
			n = a.Index + 1
		}
	}
	return n
}

// generate makes new key material in the token for a symmetric key described by o.
func (s *Service) generate(ctx context.Context, o *meta.Object) (hsm.Wrapped, []byte, error) {
	kind, err := secretKind(o)
	if err != nil {
		return hsm.Wrapped{}, nil, err
	}
	if kind == hsm.KindAES {
		return s.keys.Generate(ctx, int(o.Length))
	}
	return s.keys.GenerateSecret(ctx, kind, int(o.Length))
}
