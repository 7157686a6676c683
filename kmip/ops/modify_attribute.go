package ops

import (
	"context"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/meta"
)

// modifyAttribute changes the value of an existing attribute instance (KMIP Modify
// Attribute). Dates that drive the lifecycle may only change while they are still in
// the future and the object has not reached the state they lead to; once a key is
// active its Activation Date is history and the change is denied.
func (s *Service) modifyAttribute(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
	id, err := uid(it)
	if err != nil {
		return nil, err
	}
	a, err := requestAttr(it, "Modify Attribute")
	if err != nil {
		return nil, err
	}
	spec, known := specs[a.name]
	if !isCustom(a.name) && (!known || !spec.modifiable) {
		return nil, kmip.Errorf(kmip14.ResultReasonPermissionDenied, "attribute %q cannot be modified by a client", a.name)
	}
	o, err := s.mutate(ctx, id, func(o *meta.Object) error {
		if destroyed(o) {
			return kmip.Errorf(kmip14.ResultReasonPermissionDenied, "object %q is destroyed", id)
		}
		if a.name == attrActivationDate || a.name == attrDeactivationDate {
			return setLifecycleDate(o, a, s.now())
		}
		found := false
		for _, x := range attributes(o) {
			if x.name == a.name && x.index == a.index {
				found = true
			}
		}
		if !found {
			return kmip.Errorf(kmip14.ResultReasonItemNotFound, "object %q has no attribute %q with index %d", id, a.name, a.index)
		}
		setGeneric(o, a.name, a.index, a.value)
		// Always Sensitive and Never Extractable record history: once broken they
		// stay false.
		if a.name == attrSensitive && a.value.Int == 0 {
			setGeneric(o, attrAlwaysSensitive, 0, boolVal(false))
		}
		if a.name == attrExtractable && a.value.Int == 1 {
			setGeneric(o, attrNeverExtractable, 0, boolVal(false))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := attr{name: a.name, index: a.index, value: a.value}
	for _, x := range attributes(o) {
		if x.name == a.name && x.index == a.index {
			out = x
		}
	}
	return msg.Struct(kmip14.TagResponsePayload, msg.Text(kmip14.TagUniqueIdentifier, id), out.node()), nil
}
