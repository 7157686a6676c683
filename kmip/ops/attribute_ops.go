package ops

import (
	"context"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/meta"
)

// deletable lists the standard attributes a client may delete (KMIP 1.x "Deletable
// by client"); custom x- and y- attributes are always deletable.
var deletable = map[string]bool{
	attrName:                           true,
	attrObjectGroup:                    true,
	attrContact:                        true,
	attrCryptoParams:                   true,
	"Application Specific Information": true,
	"Alternative Name":                 true,
	"Description":                      true,
	"Comment":                          true,
}

// addAttribute adds an attribute instance; the server picks its index (KMIP Add
// Attribute). A single-valued attribute that is already there is refused: change it
// with Modify Attribute.
func (s *Service) addAttribute(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
	id, err := uid(it)
	if err != nil {
		return nil, err
	}
	a, err := requestAttr(it, "Add Attribute")
	if err != nil {
		return nil, err
	}
	if a.index != 0 {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Add Attribute takes no Attribute Index: the server assigns it")
	}
	spec, known := specs[a.name]
	switch {
	case isCustom(a.name):
	case !known:
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "unknown attribute %q", a.name)
	case !spec.settable:
		return nil, kmip.Errorf(kmip14.ResultReasonPermissionDenied, "attribute %q is set by the server, not the client", a.name)
	case !it.Version.AtLeast(spec.since.Major, spec.since.Minor):
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "attribute %q is not defined in KMIP %v", a.name, it.Version)
	}
	var added attr
	_, err = s.mutate(ctx, id, func(o *meta.Object) error {
		if destroyed(o) {
			return kmip.Errorf(kmip14.ResultReasonPermissionDenied, "object %q is destroyed", id)
		}
		for _, x := range attributes(o) {
			if x.name == a.name && !spec.multi && !isCustom(a.name) {
				return kmip.Errorf(kmip14.ResultReasonIllegalOperation, "object %q already has a %q; use Modify Attribute", id, a.name)
			}
		}
		switch a.name {
		case attrAlgorithm, attrLength, attrUsageMask:
			return kmip.Errorf(kmip14.ResultReasonPermissionDenied, "attribute %q is set only when the object is created", a.name)
		case attrActivationDate, attrDeactivationDate:
			if err := setLifecycleDate(o, a, s.now()); err != nil {
				return err
			}
			added = a
			return nil
		}
		if err := addGeneric(o, a); err != nil {
			return err
		}
		if a.name == attrUsageLimits {
			startUsageLimits(o)
		}
		last := o.Attrs[len(o.Attrs)-1]
		added = attr{name: last.Name, index: last.Index, value: a.value}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return msg.Struct(kmip14.TagResponsePayload, msg.Text(kmip14.TagUniqueIdentifier, id), added.node()), nil
}

// setLifecycleDate sets the Activation or Deactivation Date (Add or Modify
// Attribute). Dates that drive the lifecycle may only change while the object has not
// reached the state they lead to: once a key is active its Activation Date is
// history. A date already passed takes effect at once.
func setLifecycleDate(o *meta.Object, a attr, now time.Time) error {
	st := kmip14.State(o.State)
	if a.name == attrActivationDate {
		if st != kmip14.StatePreActive {
			return kmip.Errorf(kmip14.ResultReasonPermissionDenied, "the Activation Date of a %v object cannot change", st)
		}
		o.Activation = a.value.Time()
	} else {
		if st != kmip14.StatePreActive && st != kmip14.StateActive {
			return kmip.Errorf(kmip14.ResultReasonPermissionDenied, "the Deactivation Date of a %v object cannot change", st)
		}
		o.Deactivation = a.value.Time()
	}
	settle(o, now)
	return nil
}

// deleteAttribute removes one attribute instance, index 0 unless the request names
// another (KMIP Delete Attribute), and returns it.
func (s *Service) deleteAttribute(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
	id, err := uid(it)
	if err != nil {
		return nil, err
	}
	n := it.Payload.Child(kmip14.TagAttributeName)
	if n == nil || n.Type != msg.TypeTextString {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Delete Attribute needs an Attribute Name")
	}
	name, index := n.Text(), 0
	if i := it.Payload.Child(kmip14.TagAttributeIndex); i != nil {
		if i.Type != msg.TypeInteger || i.Int < 0 {
			return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "invalid Attribute Index")
		}
		index = int(i.Int)
	}
	if !isCustom(name) && !deletable[name] {
		return nil, kmip.Errorf(kmip14.ResultReasonPermissionDenied, "attribute %q cannot be deleted by a client", name)
	}
	var deleted attr
	_, err = s.mutate(ctx, id, func(o *meta.Object) error {
		if destroyed(o) {
			return kmip.Errorf(kmip14.ResultReasonPermissionDenied, "object %q is destroyed", id)
		}
		for i, x := range o.Attrs {
			if x.Name == name && x.Index == index {
				v, err := msg.Decode(x.Value)
				if err != nil {
					return err
				}
				deleted = attr{name: name, index: index, value: v}
				o.Attrs = append(o.Attrs[:i:i], o.Attrs[i+1:]...)
				return nil
			}
		}
		return kmip.Errorf(kmip14.ResultReasonItemNotFound, "object %q has no attribute %q with index %d", id, name, index)
	})
	if err != nil {
		return nil, err
	}
	return msg.Struct(kmip14.TagResponsePayload, msg.Text(kmip14.TagUniqueIdentifier, id), deleted.node()), nil
}

// requestAttr reads and checks the Attribute of an attribute operation's request.
func requestAttr(it *kmip.Item, op string) (attr, error) {
	an := it.Payload.Child(kmip14.TagAttribute)
	if an == nil {
		return attr{}, kmip.Errorf(kmip14.ResultReasonInvalidField, "%s needs an Attribute", op)
	}
	a, err := parseAttribute(an)
	if err != nil {
		return attr{}, err
	}
	return a, checkValue(a)
}
