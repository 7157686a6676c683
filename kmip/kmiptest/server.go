package kmiptest

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hsmkms/hsmkms/kmip"
)

// TestServer is a kmip.Server listening on loopback.
type TestServer struct {
	Addr   string
	PKI    *PKI
	Server *kmip.Server
}

// NewServer serves h with real mutual TLS on 127.0.0.1:0. Options adjust the server
// before it starts (limits, logger, clock). The server logs to t at Debug level unless
// an option sets a Logger, and is shut down by t.Cleanup, which fails the test if Serve
// returned anything but kmip.ErrServerClosed.
func NewServer(t testing.TB, h kmip.Handler, opts ...func(*kmip.Server)) *TestServer {
	t.Helper()
	pki := NewPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	tw := &testWriter{t: t}
	srv := &kmip.Server{
		Handler:   h,
		TLSConfig: pki.ServerTLS(),
		Logger:    slog.New(slog.NewTextHandler(tw, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, o := range opts {
		o(srv)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, kmip.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
		tw.stop()
	})
	return &TestServer{Addr: ln.Addr().String(), PKI: pki, Server: srv}
}

// testWriter sends log lines to t until the test ends; a goroutine that logs later
// (after a forced close) must not make testing panic.
type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Logf("%s", p)
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// Dial opens one TLS connection with a client certificate for identity and completes
// the handshake; the connection is closed by t.Cleanup.
func (s *TestServer) Dial(t testing.TB, identity string) *Client {
	t.Helper()
	c, err := DialTLS(t.Context(), s.Addr, s.PKI.ClientTLS(t, identity))
	if err != nil {
		t.Fatalf("dial %s as %q: %v", s.Addr, identity, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
