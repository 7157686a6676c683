package kmip

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/kmip/wire"
)

// conn is one client connection. busy is guarded by srv.mu.
type conn struct {
	srv  *Server
	id   uint64
	raw  net.Conn
	busy bool
}

// serve runs the connection until the peer leaves, a framing error makes the stream
// unrecoverable, or the server closes it.
func (c *conn) serve(cfg *tls.Config) {
	s := c.srv
	log := s.logger().With("conn_id", c.id, "peer", c.raw.RemoteAddr().String())
	defer func() {
		c.raw.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.observer().OnConnClose()
		s.wg.Done()
	}()

	tc := tls.Server(c.raw, cfg)
	peer, err := c.handshake(tc)
	if err != nil {
		cause := handshakeCause(err)
		// A bare TCP connect and close (load balancer probe, port scan) is not worth a warning.
		level := slog.LevelWarn
		if isBareClose(err) {
			level = slog.LevelDebug
		}
		log.Log(s.baseCtx, level, "tls handshake failed", "cause", cause, "err", err)
		s.observer().OnHandshakeError(cause)
		return
	}
	log = log.With("client_cn", peer.Identity)
	log.Debug("connection opened")
	err = c.loop(WithPeer(s.baseCtx, peer), tc, log)
	c.logEnd(err, log)
	// A clean close: close_notify (crypto/tls bounds its write to 5 s), then the socket.
	tc.Close()
}

func (c *conn) handshake(tc *tls.Conn) (*Peer, error) {
	s := c.srv
	if err := tc.SetDeadline(time.Now().Add(orDefault(s.HandshakeTimeout, defaultHandshakeTimeout))); err != nil {
		return nil, fmt.Errorf("set handshake deadline: %w", err)
	}
	if err := tc.HandshakeContext(s.baseCtx); err != nil {
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	if err := tc.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("clear handshake deadline: %w", err)
	}
	certs := tc.ConnectionState().PeerCertificates
	if len(certs) == 0 { // RequireAndVerifyClientCert makes this unreachable; stay safe anyway
		return nil, errors.New("tls handshake: no client certificate")
	}
	leaf := certs[0]
	sum := sha256.Sum256(leaf.Raw)
	return &Peer{
		ConnID:      c.id,
		Addr:        c.raw.RemoteAddr().String(),
		Identity:    s.identify(leaf),
		Fingerprint: hex.EncodeToString(sum[:]),
		Cert:        leaf,
	}, nil
}

// loop serves messages one after the other. It returns why the connection ended.
func (c *conn) loop(ctx context.Context, tc *tls.Conn, log *slog.Logger) error {
	s := c.srv
	br := bufio.NewReader(tc)
	for {
		if err := tc.SetReadDeadline(time.Now().Add(orDefault(s.IdleTimeout, defaultIdleTimeout))); err != nil {
			return err
		}
		// Wait for the first byte under the idle timeout; the rest of the message gets
		// ReadTimeout, so a slow sender cannot hold a connection in the middle of a message.
		if _, err := br.Peek(1); err != nil {
			if isTimeout(err) {
				return fmt.Errorf("%w: %w", errIdle, err)
			}
			return err
		}
		if !s.setBusy(c, true) {
			return ErrServerClosed
		}
		keep, err := c.serveMessage(ctx, tc, br, log)
		if !s.setBusy(c, false) {
			return ErrServerClosed
		}
		if !keep {
			return err
		}
	}
}

// serveMessage reads one message and writes its reply. keep is false when the
// connection must close; err then says why.
func (c *conn) serveMessage(ctx context.Context, tc *tls.Conn, r *bufio.Reader, log *slog.Logger) (keep bool, err error) {
	s := c.srv
	timeout := orDefault(s.ReadTimeout, defaultReadTimeout)
	if err := tc.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return false, err
	}
	limit := orDefault(s.MaxMessageSize, defaultMaxMessageSize)
	b, err := wire.ReadMessage(r, limit)
	keep = true
	var resp *msg.Response
	var tooLarge *wire.TooLargeError
	switch {
	case errors.As(err, &tooLarge):
		// Reading a moderately oversized message to its end keeps the stream in sync;
		// a huge one is cheaper to refuse by closing after the reply.
		if tooLarge.Length <= oversizeDiscardFactor*limit {
			if derr := wire.Discard(r, int64(tooLarge.Length-wire.HeaderSize)); derr != nil {
				return false, derr
			}
		} else {
			keep = false
		}
		log.Warn("message rejected", "limit", LimitMessageSize, "err", err)
		s.observer().OnLimit(LimitMessageSize)
		resp = c.refuse(msg.Version{Major: 1}, Errorf(kmip14.ResultReasonInvalidMessage,
			"message of %d bytes exceeds the limit of %d", tooLarge.Length, tooLarge.Limit))
	case errors.Is(err, wire.ErrNotStructure):
		log.Warn("message rejected", "err", err)
		resp = c.refuse(msg.Version{Major: 1}, Errorf(kmip14.ResultReasonInvalidMessage,
			"the message is not a TTLV structure"))
	case err != nil:
		return false, err
	default:
		resp = c.serveRequest(ctx, b, log)
	}
	out := resp.Node().Append(nil)
	if err := tc.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return false, err
	}
	if _, err := tc.Write(out); err != nil {
		return false, fmt.Errorf("write reply: %w", err)
	}
	if !keep {
		return false, err
	}
	return true, nil
}

// serveRequest decodes and runs one message whose framing was sound.
func (c *conn) serveRequest(ctx context.Context, b []byte, log *slog.Logger) *msg.Response {
	root, err := msg.Decode(b)
	if err != nil {
		log.Warn("message rejected", "err", err)
		return c.refuse(msg.Version{Major: 1}, err)
	}
	req, err := msg.ParseRequest(root)
	if err != nil {
		v, _ := negotiate(req.Header.Version)
		log.Warn("message rejected", "kmip_version", v.String(), "err", err)
		return c.refuse(v, err)
	}
	release := c.admitRequest(ctx, log)
	if release == nil {
		return c.refuseBatch(ctx, req)
	}
	defer release()
	return c.runBatch(ctx, req, log)
}

// refuse answers a message that cannot be executed with one failed batch item that
// names no operation.
func (c *conn) refuse(v msg.Version, err error) *msg.Response {
	reason, message, _ := ReasonFor(err)
	return &msg.Response{Version: v, TimeStamp: c.srv.now(), Items: []msg.ResponseItem{{
		Status: kmip14.ResultStatusOperationFailed, Reason: reason, Message: message,
	}}}
}
