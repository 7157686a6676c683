package ops

import (
	"context"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/meta"
)

// create generates a symmetric key inside the token (KMIP Create): AES, 3DES or an
// HMAC key (kept as a generic secret the token MACs with).
func (s *Service) create(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
	ot := it.Payload.Child(kmip14.TagObjectType)
	if ot == nil || ot.Type != msg.TypeEnumeration {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Create needs an Object Type")
	}
	if kmip14.ObjectType(ot.Int) != kmip14.ObjectTypeSymmetricKey {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Create makes Symmetric Keys; use Register for %v", kmip14.ObjectType(ot.Int))
	}
	in, err := s.withTemplates(ctx, it.Payload.Child(kmip14.TagTemplateAttribute))
	if err != nil {
		return nil, err
	}
	o := &meta.Object{Type: uint32(kmip14.ObjectTypeSymmetricKey), Format: uint32(kmip14.KeyFormatTypeRaw)}
	if err := applyAttrs(o, in, it.Version); err != nil {
		return nil, err
	}
	if o.Algorithm == 0 {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Create needs a Cryptographic Algorithm")
	}
	w, digest, err := s.generate(ctx, o)
	if err != nil {
		return nil, err
	}
	o.Wrapped, o.KEK = w.Blob, w.KEK
	if err := s.finishNew(ctx, o, digest, true, it.Version); err != nil {
		return nil, err
	}
	return msg.Struct(kmip14.TagResponsePayload,
		msg.Enum(kmip14.TagObjectType, o.Type),
		msg.Text(kmip14.TagUniqueIdentifier, o.ID)), nil
}

// finishNew gives a new object its identity, owner, dates, state and Digest attribute
// (SHA-256 of the key value, kept so Get Attributes answers it even after Destroy), and
// stores it.
func (s *Service) finishNew(ctx context.Context, o *meta.Object, digest []byte, generated bool, v msg.Version) error {
	if err := s.prepareNew(ctx, o, digest, generated); err != nil {
		return err
	}
	return s.storeNew(ctx, v, o)
}

// prepareNew is finishNew without the store write, for operations that create several
// objects in one transaction (Create Key Pair).
func (s *Service) prepareNew(ctx context.Context, o *meta.Object, digest []byte, generated bool) error {
	id, err := newID()
	if err != nil {
		return err
	}
	o.ID = id
	o.Owner = s.caller(ctx).identity
	withDefaultGroup(o, s.group)
	now := s.now().UTC()
	o.Created, o.Updated = now, now
	o.State = uint32(kmip14.StatePreActive)
	if !o.Activation.IsZero() && !o.Activation.After(now) {
		o.State = uint32(kmip14.StateActive)
	}
	// The Digest is over the encoding of the format the material came in (see
	// materialDigest). Objects without material (templates) have none.
	if digest != nil {
		setGeneric(o, attrDigest, 0, structVal(
			msg.Enum(kmip14.TagHashingAlgorithm, uint32(kmip14.HashingAlgorithmSHA_256)),
			msg.Bytes(kmip14.TagDigestValue, digest),
			msg.Enum(kmip14.TagKeyFormatType, o.Format)))
	}
	startUsageLimits(o)
	// Attributes with a default (Sensitive, Extractable, Fresh, Lease Time, Original
	// Creation Date) are stored only when they differ from it; attributes() supplies
	// the rest, which keeps a Create to a few rows.
	if genericBool(o, attrSensitive, false) {
		setGeneric(o, attrAlwaysSensitive, 0, boolVal(true))
	}
	if !genericBool(o, attrExtractable, true) {
		setGeneric(o, attrNeverExtractable, 0, boolVal(true))
	}
	if generated {
		// Which generator the token uses is the token's own business; saying
		// Unspecified is true for every HSM.
		setGeneric(o, attrRNG, 0, structVal(msg.Enum(kmip14.TagRNGAlgorithm, uint32(kmip14.RNGAlgorithmUnspecified))))
	}
	return nil
}

// storeNew writes prepared objects in one transaction: all of them or none.
func (s *Service) storeNew(ctx context.Context, v msg.Version, objs ...*meta.Object) error {
	err := s.store.Update(ctx, func(tx *meta.Tx) error {
		for _, o := range objs {
			if err := tx.Create(o); err != nil {
				return err
			}
		}
		return nil
	})
	for _, o := range objs {
		if err != nil {
			s.keys.Forget(o.ID)
			continue
		}
		s.log.DebugContext(ctx, "object created", "object_id", o.ID, "kmip_version", v.String())
	}
	if err != nil {
		return err
	}
	return s.replicate(ctx, objs)
}
