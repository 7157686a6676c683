package kmip_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/gemalto/kmip-go/kmip14"
	"github.com/gemalto/kmip-go/ttlv"

	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/kmiptest"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/meta"
)

var (
	v10 = msg.Version{Major: 1, Minor: 0}
	v12 = msg.Version{Major: 1, Minor: 2}
	v14 = msg.Version{Major: 1, Minor: 4}
)

// script is a Handler whose behaviour is chosen by the operation, so that one server
// can exercise every path of the batch executor.
type script struct {
	mu      sync.Mutex
	ran     []kmip14.Operation
	n       int
	started chan struct{} // Check announces itself here
	release chan struct{} // and then waits for this to close, or for its context
}

func newScript() *script {
	return &script{started: make(chan struct{}, 16), release: make(chan struct{})}
}

func (s *script) executed() []kmip14.Operation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]kmip14.Operation(nil), s.ran...)
}

func payload(children ...*msg.Node) *msg.Node {
	return msg.Struct(kmip14.TagResponsePayload, children...)
}

func (s *script) ServeItem(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
	op := kmip14.Operation(it.Operation)
	s.mu.Lock()
	s.ran = append(s.ran, op)
	s.n++
	n := s.n
	s.mu.Unlock()
	peer := kmip.PeerFrom(ctx)
	if peer == nil {
		return nil, errors.New("no peer in context")
	}
	switch op {
	case kmip14.OperationCreate: // a fresh identifier, owned by the caller
		return payload(msg.Text(kmip14.TagUniqueIdentifier, fmt.Sprintf("%s/%d", peer.Identity, n))), nil
	case kmip14.OperationGet: // echoes the identifier asked for, or the placeholder
		id := it.Placeholder
		if uid := it.Payload.Child(kmip14.TagUniqueIdentifier); uid != nil {
			id = uid.Text()
		}
		if id == "" {
			return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "no identifier and no placeholder")
		}
		return payload(msg.Text(kmip14.TagUniqueIdentifier, id)), nil
	case kmip14.OperationActivate:
		return nil, kmip.Errorf(kmip14.ResultReasonItemNotFound, "no such key")
	case kmip14.OperationLocate:
		return nil, fmt.Errorf("locate by name: %w", meta.ErrNotFound)
	case kmip14.OperationDestroy:
		panic("handler exploded")
	case kmip14.OperationRevoke:
		return nil, fmt.Errorf("open /var/lib/hsmkms/secret.db: %w", errors.New("disk on fire"))
	case kmip14.OperationQuery: // a handler bug: not a Response Payload
		return msg.Text(kmip14.TagUniqueIdentifier, "x"), nil
	case kmip14.OperationCheck:
		s.started <- struct{}{}
		select {
		case <-s.release:
			return payload(), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	case kmip14.OperationEncrypt: // echoes its Data, to make replies of any size
		return payload(msg.Bytes(kmip14.TagData, it.Payload.Child(kmip14.TagData).Bytes)), nil
	case kmip14.OperationDiscoverVersions:
		return payload(), nil
	}
	return nil, kmip.Errorf(kmip14.ResultReasonOperationNotSupported, "not scripted")
}

// logBuf collects a server's log for assertions.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func withLog(l *logBuf) func(*kmip.Server) {
	return func(s *kmip.Server) {
		s.Logger = slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
}

var fixedNow = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)

func withClock(s *kmip.Server) { s.Now = func() time.Time { return fixedNow } }

// request builds a request message; extra header fields go between the protocol
// version and the batch count.
func request(v msg.Version, extra []*msg.Node, items ...*msg.Node) *msg.Node {
	hdr := msg.Struct(kmip14.TagRequestHeader, msg.Struct(kmip14.TagProtocolVersion,
		msg.Int(kmip14.TagProtocolVersionMajor, v.Major), msg.Int(kmip14.TagProtocolVersionMinor, v.Minor)))
	hdr.Children = append(hdr.Children, extra...)
	hdr.Children = append(hdr.Children, msg.Int(kmip14.TagBatchCount, int32(len(items))))
	return msg.Struct(kmip14.TagRequestMessage, append([]*msg.Node{hdr}, items...)...)
}

// item builds a request batch item of op with optional extra children (ID, payload,
// extension).
func item(op kmip14.Operation, extra ...*msg.Node) *msg.Node {
	return msg.Struct(kmip14.TagBatchItem, append([]*msg.Node{msg.Enum(kmip14.TagOperation, uint32(op))}, extra...)...)
}

func reqPayload(children ...*msg.Node) *msg.Node {
	return msg.Struct(kmip14.TagRequestPayload, children...)
}

func tags(n *msg.Node) []ttlv.Tag {
	var out []ttlv.Tag
	for _, c := range n.Children {
		out = append(out, c.Tag)
	}
	return out
}

func replyVersion(resp *msg.Node) msg.Version {
	pv := resp.Child(kmip14.TagResponseHeader).Child(kmip14.TagProtocolVersion)
	return msg.Version{Major: int32(pv.Child(kmip14.TagProtocolVersionMajor).Int), Minor: int32(pv.Child(kmip14.TagProtocolVersionMinor).Int)}
}

func uidOf(item *msg.Node) string {
	return item.Child(kmip14.TagResponsePayload).Child(kmip14.TagUniqueIdentifier).Text()
}

func roundTrip(t *testing.T, c *kmiptest.Client, req *msg.Node) *msg.Node {
	t.Helper()
	resp, err := c.RoundTrip(t.Context(), req)
	if err != nil {
		t.Fatalf("round trip: %v", err)
	}
	return resp
}
