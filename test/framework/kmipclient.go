package framework

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/kmip/wire"
)

// MaxReply bounds a reply the test client accepts; far above anything a test expects,
// so only a runaway server trips it.
const MaxReply = 16 << 20

// ClientTLS builds a client TLS configuration from a PEM bundle holding the client
// certificate and its private key (as DIR/pki/admin.pem does) and the CA certificate.
// The server name is left for Dial to fill from the address.
func ClientTLS(bundlePEM, caPEM []byte) (*tls.Config, error) {
	cert, err := tls.X509KeyPair(bundlePEM, bundlePEM)
	if err != nil {
		return nil, fmt.Errorf("load client bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("load ca: no certificate in PEM")
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// Client is one TLS connection speaking raw TTLV. It is deliberately dumb: it frames
// nothing but what it is given, so malformed-input tests can send anything.
type Client struct {
	conn    *tls.Conn
	Timeout time.Duration // per round trip; zero means 30 s
}

// Dial opens a mutual-TLS connection to addr with the identity in bundlePEM.
func Dial(ctx context.Context, addr string, bundlePEM, caPEM []byte) (*Client, error) {
	cfg, err := ClientTLS(bundlePEM, caPEM)
	if err != nil {
		return nil, err
	}
	return DialTLS(ctx, addr, cfg)
}

// DialTLS opens a TLS connection to addr with cfg and completes the handshake.
func DialTLS(ctx context.Context, addr string, cfg *tls.Config) (*Client, error) {
	cfg = cfg.Clone()
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		cfg.ServerName = host
	}
	d := tls.Dialer{Config: cfg, NetDialer: &net.Dialer{Timeout: 10 * time.Second}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return &Client{conn: c.(*tls.Conn)}, nil
}

func (c *Client) deadline() time.Time {
	t := c.Timeout
	if t == 0 {
		t = 30 * time.Second
	}
	return time.Now().Add(t)
}

// Send writes b as is.
func (c *Client) Send(b []byte) error {
	if err := c.conn.SetWriteDeadline(c.deadline()); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if _, err := c.conn.Write(b); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

// Recv reads one TTLV message (header and body) and returns its raw bytes.
func (c *Client) Recv() ([]byte, error) {
	if err := c.conn.SetReadDeadline(c.deadline()); err != nil {
		return nil, fmt.Errorf("recv: %w", err)
	}
	b, err := wire.ReadMessage(c.conn, MaxReply)
	if err != nil {
		return nil, fmt.Errorf("recv: %w", err)
	}
	return b, nil
}

// RoundTripRaw sends b and returns the raw reply.
func (c *Client) RoundTripRaw(b []byte) ([]byte, error) {
	if err := c.Send(b); err != nil {
		return nil, err
	}
	return c.Recv()
}

// RoundTrip encodes req, sends it and decodes the reply.
func (c *Client) RoundTrip(req *msg.Node) (*msg.Node, error) {
	b, err := c.RoundTripRaw(req.Append(nil))
	if err != nil {
		return nil, err
	}
	n, err := msg.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("decode reply: %w", err)
	}
	return n, nil
}

// Close sends close_notify and closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Abort closes the TCP connection without a TLS close_notify, as a crashing client or
// a dropped network does.
func (c *Client) Abort() error { return c.conn.NetConn().Close() }

// Conn is the underlying TLS connection, for tests that inspect the handshake.
func (c *Client) Conn() *tls.Conn { return c.conn }
