package kmip_test

import (
	"fmt"
	"testing"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/kmiptest"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/meta"
)

// TestAuditKeepsItemError: when the store is full (or the token gone) the record of
// an item that failed for that very reason cannot be stored either; the client must
// still learn the item's own cause, not "audit trail unavailable".
func TestAuditKeepsItemError(t *testing.T) {
	t.Parallel()
	sink := &fakeSink{fail: fmt.Errorf("append audit record: %w", meta.ErrFull)}
	srv := kmiptest.NewServer(t, kmip.Audit(sink)(kmip.HandlerFunc(auditedOps)))
	c := srv.Dial(t, "mongod-1")
	item, err := c.Call(t.Context(), v12, uint32(kmip14.OperationActivate),
		msg.Struct(kmip14.TagRequestPayload, msg.Text(kmip14.TagUniqueIdentifier, "key-1")))
	if err != nil {
		t.Fatal(err)
	}
	status, reason, text := kmiptest.Result(item)
	if status != kmip14.ResultStatusOperationFailed || reason != kmip14.ResultReasonItemNotFound || text != "no such key" {
		t.Errorf("Activate failing with a failing audit sink: %v %v %q, want ItemNotFound %q", status, reason, text, "no such key")
	}
}
