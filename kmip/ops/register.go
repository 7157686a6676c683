package ops

import (
	"context"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/meta"
)

// register imports client-supplied key material into the token (KMIP Register):
// Symmetric Keys in Raw or Transparent Symmetric Key format, Secret Data in Opaque or
// Raw format.
func (s *Service) register(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
	ot := it.Payload.Child(kmip14.TagObjectType)
	if ot == nil || ot.Type != msg.TypeEnumeration {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Register needs an Object Type")
	}
	in, err := s.withTemplates(ctx, it.Payload.Child(kmip14.TagTemplateAttribute))
	if err != nil {
		return nil, err
	}
	o := &meta.Object{Type: uint32(ot.Int)}
	var block *msg.Node
	switch kmip14.ObjectType(ot.Int) {
	case kmip14.ObjectTypeSymmetricKey:
		block = it.Payload.Child(kmip14.TagSymmetricKey).Child(kmip14.TagKeyBlock)
	case kmip14.ObjectTypeSecretData:
		sd := it.Payload.Child(kmip14.TagSecretData)
		if st := sd.Child(kmip14.TagSecretDataType); st != nil && st.Type == msg.TypeEnumeration {
			o.SecretType = uint32(st.Int)
		} else {
			return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Secret Data needs a Secret Data Type")
		}
		block = sd.Child(kmip14.TagKeyBlock)
	case kmip14.ObjectTypeTemplate:
		return s.registerTemplate(ctx, it, in) // template.go
	case kmip14.ObjectTypePublicKey, kmip14.ObjectTypePrivateKey, kmip14.ObjectTypeCertificate:
		return s.registerAsym(ctx, it, o, in) // register_asym.go
	default:
		return nil, kmip.Errorf(kmip14.ResultReasonFeatureNotSupported, "registering %v objects is not supported", kmip14.ObjectType(ot.Int))
	}
	if block.Child(kmip14.TagKeyWrappingData) != nil {
		return s.registerWrapped(ctx, it, o, block, in) // wrap.go
	}
	material, err := s.readBlock(block, o, &in)
	if err != nil {
		return nil, err
	}
	if err := applyAttrs(o, in, it.Version); err != nil {
		return nil, err
	}
	kind := materialKind(o, material) // symkind.go
	// The client sent the material, so hashing it here reveals nothing new and saves
	// the token an unwrap.
	digest := materialDigest(o, material)
	w, err := s.keys.Import(ctx, kind, material)
	clear(material)
	if err != nil {
		return nil, err
	}
	o.Wrapped, o.KEK = w.Blob, w.KEK
	if err := s.finishNew(ctx, o, digest, false, it.Version); err != nil {
		return nil, err
	}
	return msg.Struct(kmip14.TagResponsePayload, msg.Text(kmip14.TagUniqueIdentifier, o.ID)), nil
}

// readBlock extracts the key material and the block's algorithm and length. Attributes
// carried inside the Key Value (allowed by KMIP 1.x) join the template's.
func (s *Service) readBlock(block *msg.Node, o *meta.Object, in *[]attr) ([]byte, error) {
	if block == nil {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "the object has no Key Block")
	}
	if block.Child(kmip14.TagKeyWrappingData) != nil {
		return nil, kmip.Errorf(kmip14.ResultReasonFeatureNotSupported, "registering wrapped key material is not supported yet")
	}
	ft := block.Child(kmip14.TagKeyFormatType)
	if ft == nil || ft.Type != msg.TypeEnumeration {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Key Block has no Key Format Type")
	}
	o.Format = uint32(ft.Int)
	kv := block.Child(kmip14.TagKeyValue)
	km := kv.Child(kmip14.TagKeyMaterial)
	if km == nil {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Key Block has no Key Material")
	}
	for _, a := range kv.All(kmip14.TagAttribute) {
		pa, err := parseAttribute(a)
		if err != nil {
			return nil, err
		}
		*in = append(*in, pa)
	}
	var material []byte
	switch f := kmip14.KeyFormatType(ft.Int); {
	case f == kmip14.KeyFormatTypeTransparentSymmetricKey && o.Type == uint32(kmip14.ObjectTypeSymmetricKey):
		k := km.Child(kmip14.TagKey)
		if km.Type != msg.TypeStructure || k == nil || k.Type != msg.TypeByteString {
			return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Transparent Symmetric Key needs a Key byte string")
		}
		material = k.Bytes
	case f == kmip14.KeyFormatTypeRaw || (f == kmip14.KeyFormatTypeOpaque && o.Type == uint32(kmip14.ObjectTypeSecretData)):
		if km.Type != msg.TypeByteString {
			return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Key Material must be a Byte String in %v format", f)
		}
		material = km.Bytes
	default:
		return nil, kmip.Errorf(kmip14.ResultReasonKeyFormatTypeNotSupported, "key format %v is not supported for %v", f, kmip14.ObjectType(o.Type))
	}
	if len(material) == 0 {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Key Material is empty")
	}
	if alg := block.Child(kmip14.TagCryptographicAlgorithm); alg != nil && alg.Type == msg.TypeEnumeration {
		o.Algorithm = uint32(alg.Int)
	}
	if l := block.Child(kmip14.TagCryptographicLength); l != nil && l.Type == msg.TypeInteger {
		o.Length = int32(l.Int)
	}
	// A private copy: the request buffer is reused and this copy is cleared after import.
	return append([]byte(nil), material...), nil
}
