package kmip

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip/msg"
)

// Observer receives the connection-level events of a Server, for metrics. The Server
// calls it from connection goroutines, so methods must be safe for concurrent use and
// fast; they must not block. Every event is also logged by the Server, once.
type Observer interface {
	OnConnOpen()  // a connection was admitted (before its handshake)
	OnConnClose() // an admitted connection ended
	OnHandshakeError(cause HandshakeCause)
	OnLimit(limit Limit)
}

// HandshakeCause classifies a failed TLS handshake.
type HandshakeCause string

// Handshake failure causes.
const (
	CauseNoCert   HandshakeCause = "no_cert"  // the client sent no certificate
	CauseBadCert  HandshakeCause = "bad_cert" // its certificate did not verify against the client CAs
	CauseRevoked  HandshakeCause = "revoked"  // Server.Revoked refused its certificate
	CauseTimeout  HandshakeCause = "timeout"  // HandshakeTimeout passed
	CauseProtocol HandshakeCause = "protocol" // anything else: not TLS, no common version or suite, reset, EOF
)

// Limit names a limit of the Server.
type Limit string

// Limits whose hits are logged and reported to the Observer.
const (
	LimitConnections    Limit = "max_connections"         // a new connection was closed at once
	LimitClientRequests Limit = "max_requests_per_client" // a message was refused with General Failure
	LimitMessageSize    Limit = "max_message_size"        // a message was refused with Invalid Message
	LimitReadTimeout    Limit = "read_timeout"            // a message or its reply stalled; the connection closed
	LimitIdleTimeout    Limit = "idle_timeout"            // an idle connection was closed
)

// ErrCertRevoked is the handshake error of a client whose certificate Server.Revoked
// refused.
var ErrCertRevoked = errors.New("kmip: client certificate revoked")

// errNoClientCert is the handshake error of a client that sent no certificate.
var errNoClientCert = errors.New("kmip: client sent no certificate")

// nopObserver is the Observer of a Server that has none.
type nopObserver struct{}

func (nopObserver) OnConnOpen()                     {}
func (nopObserver) OnConnClose()                    {}
func (nopObserver) OnHandshakeError(HandshakeCause) {}
func (nopObserver) OnLimit(Limit)                   {}

func (s *Server) observer() Observer {
	if s.Observer == nil {
		return nopObserver{}
	}
	return s.Observer
}

// verifyConnection wraps cfg's own VerifyConnection (if any) so that a missing client
// certificate and a revoked one fail the handshake with errors this package can
// classify. cfg.ClientAuth is VerifyClientCertIfGiven: the chain of a certificate that
// was sent is verified by crypto/tls, and the absence of one is refused here, by a
// sentinel rather than by crypto/tls's unexported error text.
func (s *Server) verifyConnection(next func(tls.ConnectionState) error) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errNoClientCert
		}
		if s.Revoked != nil && s.Revoked(cs.PeerCertificates[0]) {
			return ErrCertRevoked
		}
		if next != nil {
			return next(cs)
		}
		return nil
	}
}

// handshakeCause classifies a handshake error.
func handshakeCause(err error) HandshakeCause {
	var (
		verr *tls.CertificateVerificationError
		uerr x509.UnknownAuthorityError
		cerr x509.CertificateInvalidError
		nerr net.Error
	)
	switch {
	case errors.Is(err, ErrCertRevoked):
		return CauseRevoked
	case errors.Is(err, errNoClientCert):
		return CauseNoCert
	case errors.As(err, &verr), errors.As(err, &uerr), errors.As(err, &cerr):
		return CauseBadCert
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &nerr) && nerr.Timeout():
		return CauseTimeout
	}
	return CauseProtocol
}

// isBareClose reports a connection closed before it said anything (a load balancer
// probe or a port scan), which is logged at Debug rather than Warn.
func isBareClose(err error) bool { return errors.Is(err, io.EOF) }

// isTimeout reports a deadline that passed on a read or write.
func isTimeout(err error) bool {
	var nerr net.Error
	return errors.As(err, &nerr) && nerr.Timeout()
}

// Measure returns a Middleware that reports every batch item its handler served: the
// operation name (as kmip14 spells it, e.g. "GetAttributes"), the result ("Success" or
// the result reason a client sees, e.g. "ItemNotFound") and the time the handler took.
// record is called on the connection's goroutine and must be fast.
func Measure(record func(op, result string, d time.Duration)) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, it *Item) (p *msg.Node, err error) {
			start := time.Now()
			op := kmip14.Operation(it.Operation).String()
			defer func() {
				if r := recover(); r != nil {
					// The batch executor recovers it and answers General Failure.
					record(op, kmip14.ResultReasonGeneralFailure.String(), time.Since(start))
					panic(r)
				}
			}()
			p, err = next.ServeItem(ctx, it)
			result := "Success"
			if err != nil {
				reason, _, _ := ReasonFor(err)
				result = reason.String()
			}
			record(op, result, time.Since(start))
			return p, err
		})
	}
}

// Serving reports whether Serve is accepting connections on at least one listener
// (for readiness probes).
func (s *Server) Serving() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.closed && len(s.listeners) > 0
}
