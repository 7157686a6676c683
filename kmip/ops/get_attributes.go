package ops

import (
	"context"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
)

// getAttributes answers KMIP Get Attributes in 1.x form. It works in every state,
// including after Destroy, and echoes the identifier byte for byte (CLIENTS.md W10, W11).
func (s *Service) getAttributes(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
	id, err := uid(it)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, n := range it.Payload.All(kmip14.TagAttributeName) {
		if n.Type != msg.TypeTextString {
			return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Attribute Name must be a Text String")
		}
		names = append(names, n.Text())
	}
	o, err := s.view(ctx, id)
	if err != nil {
		return nil, err
	}
	out := msg.Struct(kmip14.TagResponsePayload, msg.Text(kmip14.TagUniqueIdentifier, id))
	for _, a := range selectAttrs(o, names, it.Version) {
		out.Children = append(out.Children, a.node())
	}
	return out, nil
}

// getAttributeList answers KMIP Get Attribute List: the names of the attributes the
// object has, once each.
func (s *Service) getAttributeList(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
	id, err := uid(it)
	if err != nil {
		return nil, err
	}
	o, err := s.view(ctx, id)
	if err != nil {
		return nil, err
	}
	out := msg.Struct(kmip14.TagResponsePayload, msg.Text(kmip14.TagUniqueIdentifier, id))
	seen := map[string]bool{}
	for _, a := range selectAttrs(o, nil, it.Version) {
		if !seen[a.name] {
			seen[a.name] = true
			out.Children = append(out.Children, msg.Text(kmip14.TagAttributeName, a.name))
		}
	}
	return out, nil
}
