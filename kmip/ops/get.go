package ops

import (
	"context"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/meta"
)

// get returns an object with its key material (KMIP Get). It and getAsym
// (formats.go), for private keys, are the only callers of Keys.ExportPlain.
func (s *Service) get(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
	id, err := uid(it)
	if err != nil {
		return nil, err
	}
	o, err := s.view(ctx, id)
	if err != nil {
		return nil, err
	}
	if destroyed(o) || o.Wrapped == nil {
		return nil, kmip.Errorf(kmip14.ResultReasonItemNotFound, "object %q has been destroyed; only its attributes remain", id)
	}
	if kws := it.Payload.Child(kmip14.TagKeyWrappingSpecification); kws != nil {
		return s.getWrapped(ctx, it, o, kws) // wrap.go: a Sensitive key may leave wrapped
	}
	if genericBool(o, attrSensitive, false) {
		return nil, kmip.Errorf(kmip14.ResultReasonPermissionDenied, "object %q is Sensitive: its key material cannot be returned", id)
	}
	if !genericBool(o, attrExtractable, true) {
		return nil, kmip.Errorf(kmip14.ResultReasonPermissionDenied, "object %q is not Extractable: it can only be used inside the server", id)
	}
	format := kmip14.KeyFormatType(o.Format)
	if f := it.Payload.Child(kmip14.TagKeyFormatType); f != nil {
		format = kmip14.KeyFormatType(f.Int)
	}
	if c := it.Payload.Child(kmip14.TagKeyCompressionType); c != nil {
		return nil, kmip.Errorf(kmip14.ResultReasonKeyCompressionTypeNotSupported, "key compression applies to elliptic curve keys only")
	}
	if isAsym(o.Type) {
		return s.getAsym(ctx, o, format, it.Payload.Child(kmip14.TagKeyFormatType) != nil) // formats.go
	}
	ot := kmip14.ObjectType(o.Type)
	switch {
	case ot == kmip14.ObjectTypeSymmetricKey && (format == kmip14.KeyFormatTypeRaw || format == kmip14.KeyFormatTypeTransparentSymmetricKey):
	case ot == kmip14.ObjectTypeSecretData && (format == kmip14.KeyFormatTypeRaw || format == kmip14.KeyFormatTypeOpaque):
	default:
		return nil, kmip.Errorf(kmip14.ResultReasonKeyFormatTypeNotSupported, "%v objects cannot be returned in %v format", ot, format)
	}
	material, err := s.keys.ExportPlain(ctx, keyOf(o))
	if err != nil {
		return nil, err
	}
	if err := s.markServed(ctx, o); err != nil {
		clear(material)
		return nil, err
	}
	km := msg.Bytes(kmip14.TagKeyMaterial, material)
	if format == kmip14.KeyFormatTypeTransparentSymmetricKey {
		km = msg.Struct(kmip14.TagKeyMaterial, msg.Bytes(kmip14.TagKey, material))
	}
	// CLIENTS.md W6: Key Value holds only the material; algorithm and length follow it.
	block := msg.Struct(kmip14.TagKeyBlock,
		msg.Enum(kmip14.TagKeyFormatType, uint32(format)),
		msg.Struct(kmip14.TagKeyValue, km))
	if o.Algorithm != 0 {
		block.Children = append(block.Children, msg.Enum(kmip14.TagCryptographicAlgorithm, o.Algorithm))
	}
	if o.Length != 0 {
		block.Children = append(block.Children, msg.Int(kmip14.TagCryptographicLength, o.Length))
	}
	var obj *msg.Node
	if ot == kmip14.ObjectTypeSecretData {
		obj = msg.Struct(kmip14.TagSecretData, msg.Enum(kmip14.TagSecretDataType, o.SecretType), block)
	} else {
		obj = msg.Struct(kmip14.TagSymmetricKey, block)
	}
	return msg.Struct(kmip14.TagResponsePayload,
		msg.Enum(kmip14.TagObjectType, o.Type),
		msg.Text(kmip14.TagUniqueIdentifier, id),
		obj), nil
}

// markServed records that o's key material was served to a client: it is no longer
// Fresh. Only the first Get of a key pays for this write.
func (s *Service) markServed(ctx context.Context, o *meta.Object) error {
	if !genericBool(o, attrFresh, true) {
		return nil
	}
	_, err := s.mutate(ctx, o.ID, func(o *meta.Object) error {
		setGeneric(o, attrFresh, 0, boolVal(false))
		return nil
	})
	return err
}
