package ops

import (
	"context"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/meta"
)

// Templates (KMIP 1.0–1.2, deprecated from 1.3 but still defined) are managed objects
// that hold attributes and no material. A Template-Attribute that names a template
// gets the template's client-settable attributes, except its Name; attributes given
// in the request itself replace the template's single-valued ones.

// registerTemplate stores a Template object (KMIP Register of a Template).
func (s *Service) registerTemplate(ctx context.Context, it *kmip.Item, in []attr) (*msg.Node, error) {
	t := it.Payload.Child(kmip14.TagTemplate)
	if t == nil || t.Type != msg.TypeStructure {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Register of a Template needs a Template")
	}
	for _, n := range t.All(kmip14.TagAttribute) {
		a, err := parseAttribute(n)
		if err != nil {
			return nil, err
		}
		in = append(in, a)
	}
	o := &meta.Object{Type: uint32(kmip14.ObjectTypeTemplate)}
	if err := applyAttrs(o, in, it.Version); err != nil {
		return nil, err
	}
	if err := s.finishNew(ctx, o, nil, false, it.Version); err != nil {
		return nil, err
	}
	return msg.Struct(kmip14.TagResponsePayload, msg.Text(kmip14.TagUniqueIdentifier, o.ID)), nil
}

// withTemplates reads a Template-Attribute: the attributes of the templates it names
// (by Name), then its own attributes.
func (s *Service) withTemplates(ctx context.Context, tmpl *msg.Node) ([]attr, error) {
	names := tmpl.All(kmip14.TagName)
	if len(names) == 0 {
		return templateAttrs(tmpl)
	}
	own := *tmpl
	own.Children = nil
	for _, c := range tmpl.Children {
		if c.Tag != kmip14.TagName {
			own.Children = append(own.Children, c)
		}
	}
	explicit, err := templateAttrs(&own)
	if err != nil {
		return nil, err
	}
	given := map[string]bool{}
	for _, a := range explicit {
		given[a.name] = true
	}
	var out []attr
	for _, name := range names {
		t, err := s.template(ctx, name)
		if err != nil {
			return nil, err
		}
		for _, a := range attributes(t) {
			spec, known := specs[a.name]
			if a.name == attrName || (!isCustom(a.name) && (!known || !spec.settable)) || (given[a.name] && !spec.multi) {
				continue
			}
			out = append(out, a)
		}
	}
	return append(out, explicit...), nil
}

// template finds the Template object the caller may use that carries name.
func (s *Service) template(ctx context.Context, name *msg.Node) (*meta.Object, error) {
	if nv := name.Child(kmip14.TagNameValue); nv == nil || nv.Type != msg.TypeTextString {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "a template Name needs a Name Value")
	}
	c := s.caller(ctx)
	f := meta.Filter{Type: uint32(kmip14.ObjectTypeTemplate), Attrs: []meta.Attr{{Name: attrName, Value: encodeValue(name)}}}
	if !c.admin {
		f.Owner = c.identity
	}
	var ids []string
	err := s.store.View(ctx, func(tx *meta.Tx) error {
		var err error
		ids, err = tx.Locate(f)
		return err
	})
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		t, err := s.view(ctx, id)
		if err != nil {
			return nil, err
		}
		if !destroyed(t) {
			return t, nil
		}
	}
	return nil, kmip.Errorf(kmip14.ResultReasonItemNotFound, "no template is named %q", name.Child(kmip14.TagNameValue).Text())
}
