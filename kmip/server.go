package kmip

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Server serves KMIP over mutual TLS. Set the fields before the first Serve and do not
// change them afterwards; every zero value has a documented default.
type Server struct {
	Handler Handler
	// TLSConfig must hold the server certificate and the client CAs. Serve works on a
	// copy that forces MinVersion TLS 1.2 (or higher if set) and requires a client
	// certificate that verifies against ClientCAs and that Revoked accepts.
	TLSConfig *tls.Config
	// ClientCAs, when set, is asked at every handshake for the CAs client
	// certificates may chain to, replacing TLSConfig.ClientCAs: mirrored
	// appliances trust each other's clients, and peers come and go at runtime.
	ClientCAs func() *x509.CertPool
	Logger    *slog.Logger // nil: discard
	// MaxMessageSize bounds a request, header included. 0: 1 MiB.
	MaxMessageSize int
	// HandshakeTimeout bounds the TLS handshake. 0: 10s.
	HandshakeTimeout time.Duration
	// ReadTimeout is the time allowed to receive the rest of a message once its first
	// byte arrived, and to write its reply. 0: 30s.
	ReadTimeout time.Duration
	// IdleTimeout is how long a connection may wait between messages. mongod and Percona
	// keep connections for long (CLIENTS.md W13), so it is generous. 0: 1h.
	IdleTimeout time.Duration
	// MaxConns bounds open connections; beyond it new ones are closed at once. 0: 10000.
	MaxConns int
	// MaxRequestsPerClient bounds the messages one client identity has in flight across
	// all its connections; beyond it every item of a message fails with General
	// Failure. 0: 64.
	MaxRequestsPerClient int
	// Revoked reports whether a client certificate is revoked; such a handshake is
	// refused. It runs on every handshake. nil: none is.
	Revoked func(*x509.Certificate) bool
	// Observer receives connection, handshake and limit events for metrics. nil: none.
	Observer Observer
	// Identify names the client of a certificate. nil: subject CN, else the first DNS
	// SAN, else the first email address.
	Identify func(*x509.Certificate) string
	// Now is the clock of reply time stamps. nil: time.Now.
	Now func() time.Time

	mu        sync.Mutex
	baseCtx   context.Context // cancelled by Close; parent of every batch context
	cancel    context.CancelFunc
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closed    bool // Shutdown or Close was called: accept nothing more, idle conns close
	wg        sync.WaitGroup
	nextID    atomic.Uint64
	clients   clientLimiter
}

const (
	defaultMaxMessageSize   = 1 << 20
	defaultHandshakeTimeout = 10 * time.Second
	defaultReadTimeout      = 30 * time.Second
	defaultIdleTimeout      = time.Hour
	defaultMaxConns         = 10000
	// oversizeDiscardFactor: a message up to this many times the limit is read and
	// dropped so the connection survives; a bigger one is not worth reading.
	oversizeDiscardFactor = 16
)

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Server) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

func (s *Server) identify(cert *x509.Certificate) string {
	if s.Identify != nil {
		return s.Identify(cert)
	}
	switch {
	case cert.Subject.CommonName != "":
		return cert.Subject.CommonName
	case len(cert.DNSNames) > 0:
		return cert.DNSNames[0]
	case len(cert.EmailAddresses) > 0:
		return cert.EmailAddresses[0]
	}
	return ""
}

// initLocked prepares the shared state on first use; s.mu must be held.
func (s *Server) initLocked() {
	if s.baseCtx == nil {
		s.baseCtx, s.cancel = context.WithCancel(context.Background())
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[*conn]struct{}{}
	}
}

// Serve accepts connections on ln, wraps each in TLS and serves it in its own
// goroutine. It returns ErrServerClosed after Shutdown or Close, or the listener's
// error if it fails on its own. ln is closed on return.
func (s *Server) Serve(ln net.Listener) error {
	if s.Handler == nil || s.TLSConfig == nil {
		ln.Close()
		return errors.New("kmip: serve: server needs a Handler and a TLSConfig")
	}
	cfg := s.TLSConfig.Clone()
	cfg.MinVersion = max(cfg.MinVersion, tls.VersionTLS12)
	// A certificate that is sent is verified by crypto/tls; verifyConnection refuses
	// its absence and revocation with errors handshakeCause can tell apart.
	cfg.ClientAuth = tls.VerifyClientCertIfGiven
	cfg.VerifyConnection = s.verifyConnection(cfg.VerifyConnection)
	if s.ClientCAs != nil {
		base := cfg.Clone()
		cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := base.Clone()
			c.ClientCAs = s.ClientCAs()
			return c, nil
		}
	}

	s.mu.Lock()
	s.initLocked()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()

	log := s.logger()
	var backoff time.Duration
	for {
		raw, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("kmip: accept: %w", err)
			}
			// Anything else (out of file descriptors, aborted handshakes at the TCP level)
			// is usually transient: back off rather than spin or give up.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			log.Warn("accept failed", "err", err)
			select {
			case <-time.After(backoff):
			case <-s.baseCtx.Done():
			}
			continue
		}
		backoff = 0
		s.admit(raw, cfg)
	}
}

// admit registers raw and starts serving it, or closes it at once when the server is
// closing or full.
func (s *Server) admit(raw net.Conn, cfg *tls.Config) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		raw.Close()
		return
	}
	limit := orDefault(s.MaxConns, defaultMaxConns)
	if len(s.conns) >= limit {
		s.mu.Unlock()
		raw.Close()
		s.logger().Warn("connection refused: limit reached", "peer", raw.RemoteAddr().String(),
			"limit", LimitConnections, "max_conns", limit)
		s.observer().OnLimit(LimitConnections)
		return
	}
	c := &conn{srv: s, id: s.nextID.Add(1), raw: raw}
	s.conns[c] = struct{}{}
	s.wg.Add(1) // under mu, so never concurrent with the Wait that Shutdown starts after closed is set
	s.mu.Unlock()
	s.observer().OnConnOpen()
	go c.serve(cfg)
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// closeLocked stops accepting and closes the connections that are not in the middle of
// a message (all of them when force is set); s.mu must be held.
func (s *Server) closeLocked(force bool) error {
	s.initLocked()
	s.closed = true
	var err error
	for ln := range s.listeners {
		if cerr := ln.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
			err = fmt.Errorf("kmip: close listener: %w", cerr)
		}
		delete(s.listeners, ln)
	}
	for c := range s.conns {
		if force || !c.busy {
			c.raw.Close()
		}
	}
	return err
}

// Shutdown stops accepting, closes idle connections, lets batches in flight finish and
// their replies be written, then closes those connections too. When ctx ends first, it
// closes everything as Close does and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	err := s.closeLocked(false)
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.cancel()
		return err
	case <-ctx.Done():
		s.Close()
		return ctx.Err()
	}
}

// Close stops accepting, closes every connection and cancels the contexts of running
// batches. It does not wait for handlers to return.
func (s *Server) Close() error {
	s.mu.Lock()
	err := s.closeLocked(true)
	s.mu.Unlock()
	s.cancel()
	return err
}

// setBusy records whether c is inside a message and reports whether it may go on:
// after Shutdown a connection finishes the message it is in, then closes.
func (s *Server) setBusy(c *conn, busy bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	c.busy = busy
	return !s.closed
}
