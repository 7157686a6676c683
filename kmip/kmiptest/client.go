package kmiptest

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/kmip/wire"
)

// maxReply bounds the replies the client accepts.
const maxReply = 64 << 20

// Client is one TLS connection to a KMIP server, used by one goroutine at a time.
type Client struct {
	conn *tls.Conn
	r    *bufio.Reader
}

// DialTLS connects to addr and completes the TLS handshake.
func DialTLS(ctx context.Context, addr string, cfg *tls.Config) (*Client, error) {
	d := &tls.Dialer{Config: cfg}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	tc := nc.(*tls.Conn)
	return &Client{conn: tc, r: bufio.NewReader(tc)}, nil
}

// Conn is the underlying connection, for tests that misbehave on purpose.
func (c *Client) Conn() net.Conn { return c.conn }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// RoundTrip sends req and reads one reply.
func (c *Client) RoundTrip(ctx context.Context, req *msg.Node) (*msg.Node, error) {
	return c.RoundTripBytes(ctx, req.Append(nil))
}

// RoundTripBytes sends b as it is, which may be any garbage, and reads one reply.
func (c *Client) RoundTripBytes(ctx context.Context, b []byte) (*msg.Node, error) {
	deadline, _ := ctx.Deadline() // zero: none
	if err := c.conn.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("set deadline: %w", err)
	}
	// Cancellation unblocks a pending read or write by moving the deadline to the past.
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := c.conn.Write(b); err != nil {
		return nil, fmt.Errorf("write request: %w", errors.Join(ctx.Err(), err))
	}
	out, err := wire.ReadMessage(c.r, maxReply)
	if err != nil {
		return nil, fmt.Errorf("read reply: %w", errors.Join(ctx.Err(), err))
	}
	n, err := msg.Decode(out)
	if err != nil {
		return nil, fmt.Errorf("decode reply: %w", err)
	}
	return n, nil
}

// Request builds a request message with a header of version and batch count, and the
// given batch items.
func Request(v msg.Version, items ...*msg.Node) *msg.Node {
	hdr := msg.Struct(kmip14.TagRequestHeader,
		msg.Struct(kmip14.TagProtocolVersion,
			msg.Int(kmip14.TagProtocolVersionMajor, v.Major),
			msg.Int(kmip14.TagProtocolVersionMinor, v.Minor)),
		msg.Int(kmip14.TagBatchCount, int32(len(items))))
	return msg.Struct(kmip14.TagRequestMessage, append([]*msg.Node{hdr}, items...)...)
}

// BatchItem builds a request batch item; payload may be nil.
func BatchItem(op uint32, payload *msg.Node) *msg.Node {
	return msg.Struct(kmip14.TagBatchItem, msg.Enum(kmip14.TagOperation, op), payload)
}

// Call sends a one-item request of version v and returns the reply's batch item. A
// failed operation is not an error: read it with Result.
func (c *Client) Call(ctx context.Context, v msg.Version, op uint32, payload *msg.Node) (*msg.Node, error) {
	resp, err := c.RoundTrip(ctx, Request(v, BatchItem(op, payload)))
	if err != nil {
		return nil, err
	}
	item := resp.Child(kmip14.TagBatchItem)
	if item == nil {
		return nil, fmt.Errorf("call %v: reply has no batch item", kmip14.Operation(op))
	}
	return item, nil
}

// Result reads the Result Status, Result Reason and Result Message of a reply batch item.
func Result(item *msg.Node) (kmip14.ResultStatus, kmip14.ResultReason, string) {
	var (
		status kmip14.ResultStatus
		reason kmip14.ResultReason
		text   string
	)
	if n := item.Child(kmip14.TagResultStatus); n != nil {
		status = kmip14.ResultStatus(n.Int)
	}
	if n := item.Child(kmip14.TagResultReason); n != nil {
		reason = kmip14.ResultReason(n.Int)
	}
	if n := item.Child(kmip14.TagResultMessage); n != nil {
		text = n.Text()
	}
	return status, reason, text
}
