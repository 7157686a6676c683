package kmip_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/kmiptest"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/meta"
)

// fakeSink keeps what the middleware wrote and how, and fails on demand.
type fakeSink struct {
	mu      sync.Mutex
	written []sunk
	fail    error
}

type sunk struct {
	rec     meta.AuditRecord
	durable bool
}

func (f *fakeSink) put(rec meta.AuditRecord, durable bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.written = append(f.written, sunk{rec, durable})
	return nil
}

func (f *fakeSink) Append(_ context.Context, rec meta.AuditRecord) error  { return f.put(rec, true) }
func (f *fakeSink) Enqueue(_ context.Context, rec meta.AuditRecord) error { return f.put(rec, false) }

func (f *fakeSink) take() []sunk {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.written
	f.written = nil
	return w
}

// auditedOps is a handler with one behaviour per operation.
func auditedOps(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
	uid := func(id string) *msg.Node { return msg.Text(kmip14.TagUniqueIdentifier, id) }
	switch kmip14.Operation(it.Operation) {
	case kmip14.OperationCreate:
		return payload(uid("key-1")), nil
	case kmip14.OperationGet:
		id := it.Placeholder
		if n := it.Payload.Child(kmip14.TagUniqueIdentifier); n != nil {
			id = n.Text()
		}
		return payload(uid(id), msg.Bytes(kmip14.TagKeyMaterial, []byte("secret"))), nil
	case kmip14.OperationGetAttributes:
		if it.Payload.Child(kmip14.TagUniqueIdentifier).Text() == "theirs" {
			return nil, kmip.Errorf(kmip14.ResultReasonPermissionDenied, "not yours")
		}
		return payload(uid("key-1")), nil
	case kmip14.OperationLocate:
		var ids []*msg.Node
		for i := range 100 {
			ids = append(ids, uid(fmt.Sprintf("k%d", i)))
		}
		return payload(ids...), nil
	case kmip14.OperationActivate:
		return nil, kmip.Errorf(kmip14.ResultReasonItemNotFound, "no such key")
	case kmip14.OperationDestroy:
		panic("handler exploded")
	}
	return nil, kmip.Errorf(kmip14.ResultReasonOperationNotSupported, "not scripted")
}

func TestAuditMiddleware(t *testing.T) {
	t.Parallel()
	sink := &fakeSink{}
	srv := kmiptest.NewServer(t, kmip.Audit(sink)(kmip.HandlerFunc(auditedOps)))
	c := srv.Dial(t, "mongod-1")
	local := c.Conn().LocalAddr().String()
	uidPayload := func(id string) *msg.Node {
		return msg.Struct(kmip14.TagRequestPayload, msg.Text(kmip14.TagUniqueIdentifier, id))
	}
	locateIDs := []string{}
	for i := range 64 {
		locateIDs = append(locateIDs, fmt.Sprintf("k%d", i))
	}
	locateIDs = append(locateIDs, "+36 more")

	tests := []struct {
		name    string
		items   []*msg.Node
		want    []meta.AuditRecord // Operation, ObjectIDs, Status, Reason, Message
		durable []bool
	}{
		{
			name: "create then get by placeholder",
			items: []*msg.Node{
				kmiptest.BatchItem(uint32(kmip14.OperationCreate), msg.Struct(kmip14.TagRequestPayload)),
				kmiptest.BatchItem(uint32(kmip14.OperationGet), nil),
			},
			want: []meta.AuditRecord{
				{Operation: "Create", ObjectIDs: []string{"key-1"}, Status: "Success"},
				{Operation: "Get", ObjectIDs: []string{"key-1"}, Status: "Success"},
			},
			durable: []bool{true, true},
		},
		{
			name:    "get attributes is batched",
			items:   []*msg.Node{kmiptest.BatchItem(uint32(kmip14.OperationGetAttributes), uidPayload("key-1"))},
			want:    []meta.AuditRecord{{Operation: "GetAttributes", ObjectIDs: []string{"key-1"}, Status: "Success"}},
			durable: []bool{false},
		},
		{
			name:  "a refused read is durable",
			items: []*msg.Node{kmiptest.BatchItem(uint32(kmip14.OperationGetAttributes), uidPayload("theirs"))},
			want: []meta.AuditRecord{{Operation: "GetAttributes", ObjectIDs: []string{"theirs"}, Status: "OperationFailed",
				Reason: "PermissionDenied", Message: "not yours"}},
			durable: []bool{true},
		},
		{
			name:    "locate ids are capped",
			items:   []*msg.Node{kmiptest.BatchItem(uint32(kmip14.OperationLocate), msg.Struct(kmip14.TagRequestPayload))},
			want:    []meta.AuditRecord{{Operation: "Locate", ObjectIDs: locateIDs, Status: "Success"}},
			durable: []bool{false},
		},
		{
			name:  "failure",
			items: []*msg.Node{kmiptest.BatchItem(uint32(kmip14.OperationActivate), uidPayload("gone"))},
			want: []meta.AuditRecord{{Operation: "Activate", ObjectIDs: []string{"gone"}, Status: "OperationFailed",
				Reason: "ItemNotFound", Message: "no such key"}},
			durable: []bool{true},
		},
		{
			name:  "panic",
			items: []*msg.Node{kmiptest.BatchItem(uint32(kmip14.OperationDestroy), uidPayload("k"))},
			want: []meta.AuditRecord{{Operation: "Destroy", ObjectIDs: []string{"k"}, Status: "OperationFailed",
				Reason: "GeneralFailure", Message: "internal error"}},
			durable: []bool{true},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := c.RoundTrip(t.Context(), kmiptest.Request(v12, tc.items...)); err != nil {
				t.Fatal(err)
			}
			got := sink.take()
			if len(got) != len(tc.want) {
				t.Fatalf("%d records, want %d: %+v", len(got), len(tc.want), got)
			}
			for i, g := range got {
				r, w := g.rec, tc.want[i]
				if r.Kind != meta.AuditKMIP || r.Actor != "mongod-1" || len(r.Fingerprint) != 64 ||
					r.RemoteAddr != local || r.Version != "1.2" || r.Time.IsZero() {
					t.Errorf("record %d peer fields: %+v", i, r)
				}
				if r.Operation != w.Operation || !slices.Equal(r.ObjectIDs, w.ObjectIDs) || r.Status != w.Status ||
					r.Reason != w.Reason || r.Message != w.Message {
					t.Errorf("record %d = %s %v %s %s %q, want %s %v %s %s %q", i, r.Operation, r.ObjectIDs, r.Status,
						r.Reason, r.Message, w.Operation, w.ObjectIDs, w.Status, w.Reason, w.Message)
				}
				if g.durable != tc.durable[i] {
					t.Errorf("record %d of %s: durable = %v, want %v", i, r.Operation, g.durable, tc.durable[i])
				}
			}
		})
	}
}

// TestAuditFailsClosed: when a record cannot be stored the client gets General
// Failure "audit trail unavailable" and never the payload (the key).
func TestAuditFailsClosed(t *testing.T) {
	t.Parallel()
	sink := &fakeSink{fail: fmt.Errorf("append audit record: %w", meta.ErrFull)}
	logs := &logBuf{}
	srv := kmiptest.NewServer(t, kmip.Audit(sink)(kmip.HandlerFunc(auditedOps)), withLog(logs))
	c := srv.Dial(t, "mongod-1")
	for _, op := range []kmip14.Operation{kmip14.OperationGet, kmip14.OperationGetAttributes} {
		item, err := c.Call(t.Context(), v12, uint32(op),
			msg.Struct(kmip14.TagRequestPayload, msg.Text(kmip14.TagUniqueIdentifier, "key-1")))
		if err != nil {
			t.Fatal(err)
		}
		status, reason, text := kmiptest.Result(item)
		if status != kmip14.ResultStatusOperationFailed || reason != kmip14.ResultReasonGeneralFailure || text != "audit trail unavailable" {
			t.Errorf("%v with a failing audit sink: %v %v %q", op, status, reason, text)
		}
		if item.Child(kmip14.TagResponsePayload) != nil {
			t.Errorf("%v: the payload was sent although its record was not stored", op)
		}
	}
	if !strings.Contains(logs.String(), "audit trail unavailable") || !strings.Contains(logs.String(), "storage full") {
		t.Errorf("the operator log does not say why the audit failed:\n%s", logs.String())
	}
}
