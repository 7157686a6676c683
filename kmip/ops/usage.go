package ops

import (
	"context"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/meta"
)

// Generic attributes that bound how a key is used.
const (
	attrCryptoParams = "Cryptographic Parameters"
	attrProcessStart = "Process Start Date"
	attrProtectStop  = "Protect Stop Date"
	attrUsageLimits  = "Usage Limits"
)

// genericNode decodes instance 0 of a generic attribute, nil when absent.
func genericNode(o *meta.Object, name string) *msg.Node {
	for _, a := range o.Attrs {
		if a.Name == name && a.Index == 0 {
			if n, err := msg.Decode(a.Value); err == nil {
				return n
			}
		}
	}
	return nil
}

// genericDate reads a Date-Time generic attribute, zero when absent.
func genericDate(o *meta.Object, name string) time.Time {
	if n := genericNode(o, name); n != nil && n.Type == msg.TypeDateTime {
		return n.Time()
	}
	return time.Time{}
}

// checkUsageLimits validates a client's Usage Limits: a positive Usage Limits Total
// in Bytes or Objects.
func checkUsageLimits(v *msg.Node) error {
	total, unit := v.Child(kmip14.TagUsageLimitsTotal), v.Child(kmip14.TagUsageLimitsUnit)
	switch {
	case v.Type != msg.TypeStructure || total == nil || total.Type != msg.TypeLongInteger || total.Int <= 0:
		return kmip.Errorf(kmip14.ResultReasonInvalidField, "Usage Limits needs a positive Long Integer Usage Limits Total")
	case unit == nil || unit.Type != msg.TypeEnumeration ||
		(kmip14.UsageLimitsUnit(unit.Int) != kmip14.UsageLimitsUnitByte && kmip14.UsageLimitsUnit(unit.Int) != kmip14.UsageLimitsUnitObject):
		return kmip.Errorf(kmip14.ResultReasonInvalidField, "Usage Limits Unit must be Byte or Object")
	}
	return nil
}

// usageLimits builds the attribute value; the server keeps Usage Limits Count, the
// units left.
func usageLimits(total, count int64, unit uint32) *msg.Node {
	return structVal(
		msg.Long(kmip14.TagUsageLimitsTotal, total),
		msg.Long(kmip14.TagUsageLimitsCount, count),
		msg.Enum(kmip14.TagUsageLimitsUnit, unit))
}

// startUsageLimits sets Usage Limits Count to the total on a new object.
func startUsageLimits(o *meta.Object) {
	if ul := genericNode(o, attrUsageLimits); ul != nil {
		total := ul.Child(kmip14.TagUsageLimitsTotal).Int
		setGeneric(o, attrUsageLimits, 0, usageLimits(total, total, uint32(ul.Child(kmip14.TagUsageLimitsUnit).Int)))
	}
}

// consume charges a use of n bytes (one object for a limit in Objects) to o's Usage
// Limits, refusing the use when the count left is too small. Objects without Usage
// Limits pay nothing and cause no write.
func (s *Service) consume(ctx context.Context, o *meta.Object, n int64) error {
	if genericNode(o, attrUsageLimits) == nil {
		return nil
	}
	_, err := s.mutate(ctx, o.ID, func(o *meta.Object) error {
		return spend(o, n, false)
	})
	return err
}

// spend takes units from o's Usage Limits Count; counted means n is already in the
// limit's unit (Get Usage Allocation).
func spend(o *meta.Object, n int64, counted bool) error {
	ul := genericNode(o, attrUsageLimits)
	if ul == nil {
		return kmip.Errorf(kmip14.ResultReasonPermissionDenied, "object %q has no Usage Limits", o.ID)
	}
	unit := uint32(ul.Child(kmip14.TagUsageLimitsUnit).Int)
	if !counted && kmip14.UsageLimitsUnit(unit) == kmip14.UsageLimitsUnitObject {
		n = 1
	}
	total, left := ul.Child(kmip14.TagUsageLimitsTotal).Int, ul.Child(kmip14.TagUsageLimitsTotal).Int
	if c := ul.Child(kmip14.TagUsageLimitsCount); c != nil {
		left = c.Int
	}
	if n > left {
		return kmip.Errorf(kmip14.ResultReasonPermissionDenied, "the Usage Limits of object %q allow %d more, not %d", o.ID, left, n)
	}
	setGeneric(o, attrUsageLimits, 0, usageLimits(total, left-n, unit))
	return nil
}

// getUsageAllocation reserves Usage Limits Count units of an Active object for the
// client (KMIP Get Usage Allocation).
func (s *Service) getUsageAllocation(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
	id, err := uid(it)
	if err != nil {
		return nil, err
	}
	c := it.Payload.Child(kmip14.TagUsageLimitsCount)
	if c == nil || c.Type != msg.TypeLongInteger || c.Int <= 0 {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Get Usage Allocation needs a positive Usage Limits Count")
	}
	_, err = s.mutate(ctx, id, func(o *meta.Object) error {
		if st := kmip14.State(o.State); st != kmip14.StateActive {
			return kmip.Errorf(kmip14.ResultReasonPermissionDenied, "object %q is %v; only an Active object has usage to allocate", id, st)
		}
		return spend(o, c.Int, true)
	})
	if err != nil {
		return nil, err
	}
	return idPayload(id), nil
}

// obtainLease grants the client a lease on an Active object's material for the
// object's Lease Time (KMIP Obtain Lease).
func (s *Service) obtainLease(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
	id, err := uid(it)
	if err != nil {
		return nil, err
	}
	o, err := s.view(ctx, id)
	if err != nil {
		return nil, err
	}
	if st := kmip14.State(o.State); st != kmip14.StateActive {
		return nil, kmip.Errorf(kmip14.ResultReasonPermissionDenied, "object %q is %v; leases are given on Active objects only", id, st)
	}
	return msg.Struct(kmip14.TagResponsePayload,
		msg.Text(kmip14.TagUniqueIdentifier, id),
		msg.Interval(kmip14.TagLeaseTime, leaseTime),
		msg.Date(kmip14.TagLastChangeDate, o.Updated)), nil
}
