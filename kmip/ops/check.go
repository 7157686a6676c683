package ops

import (
	"context"
	"fmt"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
)

// check tells a client whether an object may be used as it intends, without using it
// (KMIP Check): enough Usage Limits Count left, every bit of the Cryptographic Usage
// Mask allowed, and a lease no longer than the object's Lease Time. The first failed
// condition is the error.
func (s *Service) check(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
	id, err := uid(it)
	if err != nil {
		return nil, err
	}
	o, err := s.view(ctx, id)
	if err != nil {
		return nil, err
	}
	if destroyed(o) {
		return nil, kmip.Errorf(kmip14.ResultReasonPermissionDenied, "object %q is destroyed", id)
	}
	p := it.Payload
	// A failed check answers Permission Denied with the field that failed it, as
	// KMIP has the server do (PyKMIP reads it).
	failed := func(field *msg.Node, format string, args ...any) error {
		return &kmip.Error{Reason: kmip14.ResultReasonPermissionDenied, Message: fmt.Sprintf(format, args...),
			Payload: msg.Struct(kmip14.TagResponsePayload, msg.Text(kmip14.TagUniqueIdentifier, id), field)}
	}
	if c := p.Child(kmip14.TagUsageLimitsCount); c != nil {
		if ul := genericNode(o, attrUsageLimits); ul != nil {
			left := ul.Child(kmip14.TagUsageLimitsCount)
			if left != nil && c.Int > left.Int {
				return nil, failed(c, "object %q has %d units of usage left, not %d", id, left.Int, c.Int)
			}
		}
	}
	if m := p.Child(kmip14.TagCryptographicUsageMask); m != nil && int32(m.Int)&^o.UsageMask != 0 {
		return nil, failed(m, "the usage mask of object %q does not allow %v", id, kmip14.CryptographicUsageMask(int32(m.Int)&^o.UsageMask))
	}
	if l := p.Child(kmip14.TagLeaseTime); l != nil && l.Int > leaseTime {
		return nil, failed(l, "object %q is leased for at most %d s", id, leaseTime)
	}
	return idPayload(id), nil
}
