package kmip

import (
	"context"
	"crypto/x509"
	"fmt"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip/msg"
)

// Item is one batch item as a handler sees it.
type Item struct {
	Version   msg.Version
	Operation uint32
	Payload   *msg.Node // nil when the request had no payload
	// Placeholder is the ID placeholder: the Unique Identifier returned by the previous
	// successful item of the same batch, "" if none. Handlers use it when the request
	// omits the Unique Identifier.
	Placeholder string
	Header      *msg.RequestHeader
}

// Handler executes one batch item and returns its Response Payload (nil for none).
// A returned error is turned into a failed item through ReasonFor.
type Handler interface {
	ServeItem(ctx context.Context, it *Item) (*msg.Node, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, it *Item) (*msg.Node, error)

// ServeItem calls f.
func (f HandlerFunc) ServeItem(ctx context.Context, it *Item) (*msg.Node, error) { return f(ctx, it) }

// Middleware wraps a Handler (authorisation, audit, metrics).
type Middleware func(Handler) Handler

// Mux dispatches on the operation.
type Mux struct {
	ops map[uint32]Handler
}

// NewMux returns an empty Mux.
func NewMux() *Mux { return &Mux{ops: map[uint32]Handler{}} }

// Handle registers h for op. A nil handler or a duplicate registration is a wiring
// mistake and panics at startup.
func (m *Mux) Handle(op uint32, h Handler) {
	if h == nil {
		panic(fmt.Sprintf("kmip: nil handler for operation %v", kmip14.Operation(op)))
	}
	if _, dup := m.ops[op]; dup {
		panic(fmt.Sprintf("kmip: duplicate handler for operation %v", kmip14.Operation(op)))
	}
	m.ops[op] = h
}

// Operations lists the registered operations (for Query).
func (m *Mux) Operations() []uint32 {
	out := make([]uint32, 0, len(m.ops))
	for op := range m.ops {
		out = append(out, op)
	}
	return out
}

// ServeItem dispatches to the registered handler, or fails with Operation Not Supported.
func (m *Mux) ServeItem(ctx context.Context, it *Item) (*msg.Node, error) {
	h, ok := m.ops[it.Operation]
	if !ok {
		return nil, Errorf(kmip14.ResultReasonOperationNotSupported, "operation %v is not supported", kmip14.Operation(it.Operation))
	}
	return h.ServeItem(ctx, it)
}

// Peer describes the authenticated client of a connection.
type Peer struct {
	ConnID      uint64
	Addr        string
	Identity    string // the name objects are owned by: the certificate's subject CN (or first SAN when CN is empty)
	Fingerprint string // hex SHA-256 of the client certificate
	Cert        *x509.Certificate
}

type peerKey struct{}

// WithPeer returns a context carrying p.
func WithPeer(ctx context.Context, p *Peer) context.Context {
	return context.WithValue(ctx, peerKey{}, p)
}

// PeerFrom returns the peer of the connection serving ctx, or nil.
func PeerFrom(ctx context.Context) *Peer {
	p, _ := ctx.Value(peerKey{}).(*Peer)
	return p
}
