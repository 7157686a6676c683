package kmip

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"testing"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip/msg"
)

func TestNegotiate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want  msg.Version
		supported bool
	}{
		{msg.Version{Major: 1, Minor: 0}, msg.Version{Major: 1, Minor: 0}, true},
		{msg.Version{Major: 1, Minor: 3}, msg.Version{Major: 1, Minor: 3}, true},
		{msg.Version{Major: 1, Minor: 4}, msg.Version{Major: 1, Minor: 4}, true},
		{msg.Version{Major: 1, Minor: 5}, msg.Version{Major: 1, Minor: 4}, false},
		{msg.Version{Major: 2, Minor: 1}, msg.Version{Major: 1, Minor: 4}, false},
		{msg.Version{Major: -1, Minor: 0}, msg.Version{Major: 1, Minor: 4}, false},
	}
	for _, tt := range tests {
		if got, ok := negotiate(tt.in); got != tt.want || ok != tt.supported {
			t.Errorf("negotiate(%v) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.supported)
		}
	}
}

func TestIdentify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cert *x509.Certificate
		want string
	}{
		{"common name first", &x509.Certificate{Subject: pkix.Name{CommonName: "cn"}, DNSNames: []string{"dns"}}, "cn"},
		{"then DNS SAN", &x509.Certificate{DNSNames: []string{"dns", "other"}, EmailAddresses: []string{"e@x"}}, "dns"},
		{"then email", &x509.Certificate{EmailAddresses: []string{"e@x"}}, "e@x"},
		{"nothing", &x509.Certificate{}, ""},
	}
	for _, tt := range tests {
		if got := (&Server{}).identify(tt.cert); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
	custom := &Server{Identify: func(c *x509.Certificate) string { return "custom" }}
	if got := custom.identify(&x509.Certificate{}); got != "custom" {
		t.Errorf("Identify hook ignored: %q", got)
	}
}

// FuzzServeMessage feeds arbitrary bytes through decode, parse and the batch executor
// on a stub handler: no panic, and always a well-formed reply of at least one item.
func FuzzServeMessage(f *testing.F) {
	hdr := func(v msg.Version, extra ...*msg.Node) *msg.Node {
		return msg.Struct(kmip14.TagRequestHeader, append([]*msg.Node{msg.Struct(kmip14.TagProtocolVersion,
			msg.Int(kmip14.TagProtocolVersionMajor, v.Major), msg.Int(kmip14.TagProtocolVersionMinor, v.Minor))}, extra...)...)
	}
	bi := func(op kmip14.Operation, extra ...*msg.Node) *msg.Node {
		return msg.Struct(kmip14.TagBatchItem, append([]*msg.Node{msg.Enum(kmip14.TagOperation, uint32(op))}, extra...)...)
	}
	uid := msg.Struct(kmip14.TagRequestPayload, msg.Text(kmip14.TagUniqueIdentifier, "k"))
	f.Add(msg.Struct(kmip14.TagRequestMessage, hdr(msg.Version{Major: 1, Minor: 0}, msg.Int(kmip14.TagBatchCount, 1)), bi(kmip14.OperationGet, uid)).Append(nil))
	f.Add(msg.Struct(kmip14.TagRequestMessage, hdr(msg.Version{Major: 1, Minor: 2},
		msg.Int(kmip14.TagMaximumResponseSize, 100), msg.Enum(kmip14.TagBatchErrorContinuationOption, 1), msg.Int(kmip14.TagBatchCount, 3)),
		bi(kmip14.OperationCreate, msg.Bytes(kmip14.TagUniqueBatchItemID, []byte{1})),
		bi(kmip14.OperationDestroy),
		bi(kmip14.OperationGet, msg.Struct(kmip14.TagMessageExtension, msg.Bool(kmip14.TagCriticalityIndicator, true)))).Append(nil))
	f.Add(msg.Struct(kmip14.TagRequestMessage, hdr(msg.Version{Major: 2, Minor: 0}, msg.Int(kmip14.TagBatchCount, 1)), bi(kmip14.OperationDiscoverVersions)).Append(nil))
	f.Add([]byte{0x42, 0, 0x78, 1, 0, 0, 0, 0})

	stub := HandlerFunc(func(ctx context.Context, it *Item) (*msg.Node, error) {
		switch kmip14.Operation(it.Operation) {
		case kmip14.OperationCreate:
			return msg.Struct(kmip14.TagResponsePayload, msg.Text(kmip14.TagUniqueIdentifier, "new")), nil
		case kmip14.OperationGet:
			return msg.Struct(kmip14.TagResponsePayload, msg.Text(kmip14.TagUniqueIdentifier, it.Placeholder), it.Payload), nil
		case kmip14.OperationDestroy:
			panic("stub panic")
		}
		return nil, Errorf(kmip14.ResultReasonOperationNotSupported, "stub")
	})
	c := &conn{srv: &Server{Handler: stub, Now: func() time.Time { return time.Unix(0, 0) }}, id: 1}
	log := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, in []byte) {
		resp := c.serveRequest(context.Background(), in, log)
		out := resp.Node().Append(nil)
		root, err := msg.Decode(out)
		if err != nil {
			t.Fatalf("reply does not decode: %v", err)
		}
		items := root.All(kmip14.TagBatchItem)
		if len(items) == 0 || root.Child(kmip14.TagResponseHeader).Child(kmip14.TagBatchCount).Int != int64(len(items)) {
			t.Fatalf("reply with %d items: %+v", len(items), root)
		}
		if !msg.IsSupported(resp.Version) {
			t.Fatalf("reply in unsupported version %v", resp.Version)
		}
	})
}
