package kmip_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/kmiptest"
	"github.com/hsmkms/hsmkms/kmip/msg"
)

// recorder is an Observer that remembers what it heard.
type recorder struct {
	mu         sync.Mutex
	open       int
	closed     int
	handshakes map[kmip.HandshakeCause]int
	limits     map[kmip.Limit]int
}

func newRecorder() *recorder {
	return &recorder{handshakes: map[kmip.HandshakeCause]int{}, limits: map[kmip.Limit]int{}}
}

func (r *recorder) OnConnOpen()  { r.mu.Lock(); r.open++; r.mu.Unlock() }
func (r *recorder) OnConnClose() { r.mu.Lock(); r.closed++; r.mu.Unlock() }
func (r *recorder) OnHandshakeError(c kmip.HandshakeCause) {
	r.mu.Lock()
	r.handshakes[c]++
	r.mu.Unlock()
}
func (r *recorder) OnLimit(l kmip.Limit) { r.mu.Lock(); r.limits[l]++; r.mu.Unlock() }

func (r *recorder) handshake(c kmip.HandshakeCause) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.handshakes[c]
}

func (r *recorder) limit(l kmip.Limit) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.limits[l]
}

func (r *recorder) conns() (open, closed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.open, r.closed
}

func withObserver(r *recorder) func(*kmip.Server) { return func(s *kmip.Server) { s.Observer = r } }

// logLines returns the lines of logs that contain every one of parts.
func logLines(logs *logBuf, parts ...string) []string {
	var out []string
	for line := range strings.SplitSeq(logs.String(), "\n") {
		all := line != ""
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			out = append(out, line)
		}
	}
	return out
}

// TestHandshakeFailureCauses fails a handshake in each way a client can and checks
// that each is counted under its cause and logged once, naming the cause.
func TestHandshakeFailureCauses(t *testing.T) {
	t.Parallel()
	other := kmiptest.NewPKI(t) // a CA the server does not trust
	tests := []struct {
		name  string
		cause kmip.HandshakeCause
		level string
		dial  func(t *testing.T, srv *kmiptest.TestServer) error
	}{
		{"no certificate", kmip.CauseNoCert, "WARN", func(t *testing.T, srv *kmiptest.TestServer) error {
			return dialAndCall(t, srv.Addr, srv.PKI.ClientTLS(t, ""))
		}},
		{"certificate from another CA", kmip.CauseBadCert, "WARN", func(t *testing.T, srv *kmiptest.TestServer) error {
			cfg := other.ClientTLS(t, "mallory")
			cfg.RootCAs = srv.PKI.CertPool()
			return dialAndCall(t, srv.Addr, cfg)
		}},
		{"revoked certificate", kmip.CauseRevoked, "WARN", func(t *testing.T, srv *kmiptest.TestServer) error {
			return dialAndCall(t, srv.Addr, srv.PKI.ClientTLS(t, "revoked-client"))
		}},
		{"silent client", kmip.CauseTimeout, "WARN", func(t *testing.T, srv *kmiptest.TestServer) error {
			c, err := net.Dial("tcp", srv.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = c.Read(make([]byte, 1)) // the server closes after HandshakeTimeout
			return err
		}},
		{"not TLS", kmip.CauseProtocol, "WARN", func(t *testing.T, srv *kmiptest.TestServer) error {
			c, err := net.Dial("tcp", srv.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "GET / HTTP/1.0\r\n\r\n")
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = c.Read(make([]byte, 512))
			for err == nil {
				_, err = c.Read(make([]byte, 512))
			}
			return err
		}},
		{"bare connect and close", kmip.CauseProtocol, "DEBUG", func(t *testing.T, srv *kmiptest.TestServer) error {
			c, err := net.Dial("tcp", srv.Addr)
			if err != nil {
				t.Fatal(err)
			}
			return c.Close()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var logs logBuf
			rec := newRecorder()
			srv := kmiptest.NewServer(t, newScript(), withLog(&logs), withObserver(rec), func(s *kmip.Server) {
				s.HandshakeTimeout = 300 * time.Millisecond
				s.Revoked = func(c *x509.Certificate) bool { return c.Subject.CommonName == "revoked-client" }
			})
			tt.dial(t, srv)
			if !pollUntil(t, func() bool { return rec.handshake(tt.cause) == 1 }) {
				t.Fatalf("cause %s counted %d times; all: %v", tt.cause, rec.handshake(tt.cause), rec.handshakes)
			}
			if !pollUntil(t, func() bool { open, closed := rec.conns(); return open == 1 && closed == 1 }) {
				open, closed := rec.conns()
				t.Errorf("connections opened %d, closed %d; want 1 and 1", open, closed)
			}
			lines := logLines(&logs, `msg="tls handshake failed"`)
			if len(lines) != 1 || !strings.Contains(lines[0], "cause="+string(tt.cause)) || !strings.Contains(lines[0], "level="+tt.level) {
				t.Errorf("want one %s line with cause=%s, got %q", tt.level, tt.cause, lines)
			}
			if len(rec.handshakes) != 1 {
				t.Errorf("other causes counted: %v", rec.handshakes)
			}
		})
	}
}

// dialAndCall completes a handshake and one request; with TLS 1.3 a refused client
// certificate shows only on the first read.
func dialAndCall(t *testing.T, addr string, cfg *tls.Config) error {
	t.Helper()
	cl, err := kmiptest.DialTLS(t.Context(), addr, cfg)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err = cl.Call(ctx, v12, uint32(kmip14.OperationDiscoverVersions), nil)
	if err == nil {
		t.Fatal("a refused client was served")
	}
	return err
}

// TestRevocationTakesEffectOnNextHandshake revokes a certificate while the server runs:
// its next handshake is refused, other clients are unaffected.
func TestRevocationTakesEffectOnNextHandshake(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		revoked = map[string]bool{}
	)
	rec := newRecorder()
	srv := kmiptest.NewServer(t, newScript(), withObserver(rec), func(s *kmip.Server) {
		s.Revoked = func(c *x509.Certificate) bool {
			mu.Lock()
			defer mu.Unlock()
			return revoked[c.SerialNumber.Text(16)]
		}
	})
	bob, alice := srv.PKI.ClientTLS(t, "bob"), srv.PKI.ClientTLS(t, "alice")
	call := func(cfg *tls.Config) error {
		cl, err := kmiptest.DialTLS(t.Context(), srv.Addr, cfg)
		if err != nil {
			return err
		}
		defer cl.Close()
		_, err = cl.Call(t.Context(), v12, uint32(kmip14.OperationDiscoverVersions), nil)
		return err
	}
	if err := call(bob); err != nil {
		t.Fatalf("bob before revocation: %v", err)
	}
	mu.Lock()
	revoked[bob.Certificates[0].Leaf.SerialNumber.Text(16)] = true
	mu.Unlock()
	if err := call(bob); err == nil {
		t.Fatal("bob served after revocation")
	}
	if err := call(alice); err != nil {
		t.Fatalf("alice after bob's revocation: %v", err)
	}
	if !pollUntil(t, func() bool { return rec.handshake(kmip.CauseRevoked) == 1 }) {
		t.Errorf("revoked handshakes counted: %v", rec.handshakes)
	}
}

// TestMaxRequestsPerClient holds a client's requests in flight on several connections:
// one more fails with General Failure naming the client, other clients are served,
// and the client is served again once a slot frees.
func TestMaxRequestsPerClient(t *testing.T) {
	t.Parallel()
	var logs logBuf
	rec := newRecorder()
	h := newScript()
	srv := kmiptest.NewServer(t, h, withLog(&logs), withObserver(rec), func(s *kmip.Server) { s.MaxRequestsPerClient = 2 })
	blocked := make(chan error, 2)
	for range 2 {
		cl := srv.Dial(t, "alice")
		go func() {
			_, err := cl.Call(t.Context(), v12, uint32(kmip14.OperationCheck), nil)
			blocked <- err
		}()
		<-h.started
	}
	canary := "canary-3f9c1d7e" // request data must never reach the log
	third := srv.Dial(t, "alice")
	resp := roundTrip(t, third, request(v12, nil,
		item(kmip14.OperationEncrypt, reqPayload(msg.Bytes(kmip14.TagData, []byte(canary)))),
		item(kmip14.OperationGet, reqPayload(msg.Text(kmip14.TagUniqueIdentifier, "k")))))
	items := resp.All(kmip14.TagBatchItem)
	if len(items) != 2 {
		t.Fatalf("%d items in the refusal, want 2", len(items))
	}
	for i, it := range items {
		status, reason, text := kmiptest.Result(it)
		if status != kmip14.ResultStatusOperationFailed || reason != kmip14.ResultReasonGeneralFailure ||
			text != "too many concurrent requests from alice" {
			t.Errorf("item %d: %v %v %q", i, status, reason, text)
		}
		if op := it.Child(kmip14.TagOperation); op == nil {
			t.Errorf("item %d names no operation", i)
		}
	}
	bob, err := srv.Dial(t, "bob").Call(t.Context(), v12, uint32(kmip14.OperationGet), reqPayload(msg.Text(kmip14.TagUniqueIdentifier, "k")))
	if err != nil {
		t.Fatal(err)
	}
	if status, _, text := kmiptest.Result(bob); status != kmip14.ResultStatusSuccess {
		t.Errorf("bob refused while alice is at her limit: %s", text)
	}
	close(h.release)
	for range 2 {
		if err := <-blocked; err != nil {
			t.Fatal(err)
		}
	}
	it, err := third.Call(t.Context(), v12, uint32(kmip14.OperationGet), reqPayload(msg.Text(kmip14.TagUniqueIdentifier, "k")))
	if err != nil {
		t.Fatal(err)
	}
	if status, _, text := kmiptest.Result(it); status != kmip14.ResultStatusSuccess {
		t.Errorf("alice still refused after her requests ended: %s", text)
	}
	if n := rec.limit(kmip.LimitClientRequests); n != 1 {
		t.Errorf("limit counted %d times, want 1", n)
	}
	lines := logLines(&logs, `msg="request refused: limit reached"`)
	if len(lines) != 1 || !strings.Contains(lines[0], "limit=max_requests_per_client") || !strings.Contains(lines[0], "client_cn=alice") {
		t.Errorf("want one refusal line naming the limit and client, got %q", lines)
	}
	if strings.Contains(logs.String(), canary) {
		t.Errorf("request data leaked into the log")
	}
}

// TestTimeoutsCloseCleanly lets one connection idle out and stalls another inside a
// message: both close, each is logged once at its level and counted.
func TestTimeoutsCloseCleanly(t *testing.T) {
	t.Parallel()
	var logs logBuf
	rec := newRecorder()
	srv := kmiptest.NewServer(t, newScript(), withLog(&logs), withObserver(rec), func(s *kmip.Server) {
		s.IdleTimeout = 200 * time.Millisecond
		s.ReadTimeout = 200 * time.Millisecond
	})

	idle := srv.Dial(t, "idler")
	if _, err := idle.Call(t.Context(), v12, uint32(kmip14.OperationDiscoverVersions), nil); err != nil {
		t.Fatal(err)
	}
	idle.Conn().SetReadDeadline(time.Now().Add(5 * time.Second))
	// A clean close: the TLS layer sees close_notify, which Read reports as io.EOF.
	if _, err := idle.Conn().Read(make([]byte, 1)); err == nil || isTimeoutErr(err) {
		t.Fatalf("idle connection: read returned %v, want the server's close", err)
	}

	stalled := srv.Dial(t, "staller")
	if _, err := stalled.Conn().Write(request(v12, nil, item(kmip14.OperationDiscoverVersions)).Append(nil)[:5]); err != nil {
		t.Fatal(err)
	}
	stalled.Conn().SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := stalled.Conn().Read(make([]byte, 1)); err == nil || isTimeoutErr(err) {
		t.Fatalf("stalled connection: read returned %v, want the server's close", err)
	}

	if !pollUntil(t, func() bool {
		return rec.limit(kmip.LimitIdleTimeout) == 1 && rec.limit(kmip.LimitReadTimeout) == 1
	}) {
		t.Fatalf("limits counted: %v", rec.limits)
	}
	if l := logLines(&logs, `msg="connection closed: idle timeout"`); len(l) != 1 || !strings.Contains(l[0], "level=DEBUG") || !strings.Contains(l[0], "client_cn=idler") {
		t.Errorf("idle timeout lines: %q", l)
	}
	if l := logLines(&logs, `msg="connection closed: read timeout"`); len(l) != 1 || !strings.Contains(l[0], "level=WARN") || !strings.Contains(l[0], "client_cn=staller") {
		t.Errorf("read timeout lines: %q", l)
	}
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestConnectionAndSizeLimitsCounted checks that the connection and message size
// limits reach the Observer once per hit.
func TestConnectionAndSizeLimitsCounted(t *testing.T) {
	t.Parallel()
	var logs logBuf
	rec := newRecorder()
	srv := kmiptest.NewServer(t, newScript(), withLog(&logs), withObserver(rec), func(s *kmip.Server) {
		s.MaxConns = 1
		s.MaxMessageSize = 1024
	})
	cl := srv.Dial(t, "a")
	big := request(v12, nil, item(kmip14.OperationEncrypt, reqPayload(msg.Bytes(kmip14.TagData, make([]byte, 2048)))))
	it := roundTrip(t, cl, big).Child(kmip14.TagBatchItem)
	if _, reason, _ := kmiptest.Result(it); reason != kmip14.ResultReasonInvalidMessage {
		t.Errorf("oversize message answered %v", reason)
	}
	if err := dialAndCallQuiet(t, srv.Addr, srv.PKI.ClientTLS(t, "b")); err == nil {
		t.Error("second connection served with MaxConns 1")
	}
	if !pollUntil(t, func() bool {
		return rec.limit(kmip.LimitMessageSize) == 1 && rec.limit(kmip.LimitConnections) == 1
	}) {
		t.Fatalf("limits counted: %v", rec.limits)
	}
	if l := logLines(&logs, "limit=max_connections"); len(l) != 1 {
		t.Errorf("connection limit lines: %q", l)
	}
	if l := logLines(&logs, "limit=max_message_size"); len(l) != 1 {
		t.Errorf("message size limit lines: %q", l)
	}
}

func dialAndCallQuiet(t *testing.T, addr string, cfg *tls.Config) error {
	cl, err := kmiptest.DialTLS(t.Context(), addr, cfg)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err = cl.Call(ctx, v12, uint32(kmip14.OperationDiscoverVersions), nil)
	return err
}

// TestMeasure checks what the metrics middleware reports for each kind of outcome.
func TestMeasure(t *testing.T) {
	t.Parallel()
	type seen struct{ op, result string }
	tests := []struct {
		name string
		op   kmip14.Operation
		want seen
	}{
		{"success", kmip14.OperationCreate, seen{"Create", "Success"}},
		{"kmip error", kmip14.OperationActivate, seen{"Activate", "ItemNotFound"}},
		{"mapped sentinel (meta.ErrNotFound)", kmip14.OperationLocate, seen{"Locate", "ItemNotFound"}},
		{"unknown error", kmip14.OperationRevoke, seen{"Revoke", "GeneralFailure"}},
		{"panic", kmip14.OperationDestroy, seen{"Destroy", "GeneralFailure"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got []seen
			var d time.Duration
			h := kmip.Measure(func(op, result string, took time.Duration) {
				got = append(got, seen{op, result})
				d = took
			})(newScript())
			ctx := kmip.WithPeer(t.Context(), &kmip.Peer{Identity: "m"})
			func() {
				defer func() {
					if r := recover(); (r != nil) != (tt.op == kmip14.OperationDestroy) {
						t.Errorf("panic %v", r)
					}
				}()
				h.ServeItem(ctx, &kmip.Item{Version: v12, Operation: uint32(tt.op)})
			}()
			if len(got) != 1 || got[0] != tt.want || d <= 0 {
				t.Errorf("recorded %v (%v), want %v", got, d, tt.want)
			}
		})
	}
}

func TestServing(t *testing.T) {
	t.Parallel()
	srv, _, _, served := startServer(t, newScript())
	if !pollUntil(t, srv.Serving) {
		t.Fatal("Serving false while serving")
	}
	srv.Close()
	<-served
	if srv.Serving() {
		t.Error("Serving true after Close")
	}
}
