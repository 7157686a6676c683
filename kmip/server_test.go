package kmip_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
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

// TestRejectsThenKeepsServing sends broken messages on one connection; each gets an
// Invalid Message reply with one item and no operation, and the connection goes on.
func TestRejectsThenKeepsServing(t *testing.T) {
	t.Parallel()
	var logs logBuf
	srv := kmiptest.NewServer(t, newScript(), withLog(&logs), func(s *kmip.Server) { s.MaxMessageSize = 4096 })
	cl := srv.Dial(t, "alice")
	good := request(v12, nil, item(kmip14.OperationGet, reqPayload(msg.Text(kmip14.TagUniqueIdentifier, "k"))))
	oversize := request(v12, nil, item(kmip14.OperationEncrypt, reqPayload(msg.Bytes(kmip14.TagData, make([]byte, 8000)))))
	tests := []struct {
		name    string
		in      []byte
		version msg.Version
		message string
	}{
		{"malformed child", []byte{0x42, 0, 0x78, 1, 0, 0, 0, 8, 0x42, 0, 0x94, 7, 0, 0, 0, 9}, v10, "malformed TTLV"},
		{"bad boolean", msg.Struct(kmip14.TagRequestMessage, &msg.Node{Tag: kmip14.TagAsynchronousIndicator, Type: msg.TypeBoolean, Int: 5}).Append(nil), v10, "boolean value 5"},
		{"not a structure", msg.Text(kmip14.TagRequestMessage, "hello").Append(nil), v10, "not a TTLV structure"},
		{"response instead of request", msg.Struct(kmip14.TagResponseMessage).Append(nil), v10, "expected a Request Message"},
		{"batch count mismatch", func() []byte {
			r := request(v12, nil, item(kmip14.OperationGet))
			r.Child(kmip14.TagRequestHeader).Child(kmip14.TagBatchCount).Int = 3
			return r.Append(nil)
		}(), v12, "Batch Count 3 but 1 batch items"},
		{"unsupported version and broken", func() []byte {
			r := request(msg.Version{Major: 3, Minor: 0}, nil)
			return r.Append(nil)
		}(), v14, "Batch Count 0"},
		{"oversize", oversize.Append(nil), v10, fmt.Sprintf("message of %d bytes exceeds the limit of 4096", oversize.Size())},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := cl.RoundTripBytes(t.Context(), tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if v := replyVersion(resp); v != tt.version {
				t.Errorf("reply version %v, want %v", v, tt.version)
			}
			items := resp.All(kmip14.TagBatchItem)
			if len(items) != 1 || items[0].Child(kmip14.TagOperation) != nil {
				t.Fatalf("want one item without operation, got %+v", items)
			}
			status, reason, message := kmiptest.Result(items[0])
			if status != kmip14.ResultStatusOperationFailed || reason != kmip14.ResultReasonInvalidMessage || !strings.Contains(message, tt.message) {
				t.Errorf("got %v %v %q, want Invalid Message containing %q", status, reason, message, tt.message)
			}
			// The same connection still serves.
			if uid := uidOf(roundTrip(t, cl, good).Child(kmip14.TagBatchItem)); uid != "k" {
				t.Errorf("after rejection: uid %q", uid)
			}
		})
	}
	if got := strings.Count(logs.String(), `level=WARN msg="message rejected"`); got != len(tests) {
		t.Errorf("%d rejection warnings, want %d:\n%s", got, len(tests), logs.String())
	}
	if line := logLine(logs.String(), "exceeds the limit"); !strings.Contains(line, "client_cn=alice") || !strings.Contains(line, "conn_id=") {
		t.Errorf("rejection log lacks connection facts: %s", line)
	}
}

// TestHugeMessageClosesAfterReply: a message far beyond the limit is answered, then the
// connection is closed instead of reading it.
func TestHugeMessageClosesAfterReply(t *testing.T) {
	t.Parallel()
	srv := kmiptest.NewServer(t, newScript(), func(s *kmip.Server) { s.MaxMessageSize = 1024 })
	cl := srv.Dial(t, "alice")
	hdr := []byte{0x42, 0x00, 0x78, 0x01, 0x00, 0x10, 0x00, 0x00} // declares 1 MiB
	resp, err := cl.RoundTripBytes(t.Context(), hdr)
	if err != nil {
		t.Fatal(err)
	}
	if _, reason, message := kmiptest.Result(resp.Child(kmip14.TagBatchItem)); reason != kmip14.ResultReasonInvalidMessage ||
		message != "message of 1048584 bytes exceeds the limit of 1024" {
		t.Fatalf("got %v %q", reason, message)
	}
	if _, err := cl.RoundTrip(t.Context(), request(v10, nil, item(kmip14.OperationDiscoverVersions))); err == nil {
		t.Fatal("connection still open after a huge message")
	}
}

// TestPeer checks what handlers learn about the client from the context.
func TestPeer(t *testing.T) {
	t.Parallel()
	peers := make(chan *kmip.Peer, 1)
	srv := kmiptest.NewServer(t, kmip.HandlerFunc(func(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
		peers <- kmip.PeerFrom(ctx)
		return nil, nil
	}))
	cfg := srv.PKI.ClientTLS(t, "mongod-7")
	cl, err := kmiptest.DialTLS(t.Context(), srv.Addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.Call(t.Context(), v12, uint32(kmip14.OperationQuery), nil); err != nil {
		t.Fatal(err)
	}
	p := <-peers
	sum := sha256.Sum256(cfg.Certificates[0].Leaf.Raw)
	if p.Identity != "mongod-7" || p.Fingerprint != hex.EncodeToString(sum[:]) || p.ConnID == 0 ||
		p.Addr != cl.Conn().LocalAddr().String() || p.Cert == nil || p.Cert.Subject.CommonName != "mongod-7" {
		t.Fatalf("peer %+v", p)
	}
}

func TestHandshakeRejectsClientWithoutCertificate(t *testing.T) {
	t.Parallel()
	var logs logBuf
	srv := kmiptest.NewServer(t, newScript(), withLog(&logs))
	for _, max := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cfg := srv.PKI.ClientTLS(t, "")
		cfg.MaxVersion = max
		cl, err := kmiptest.DialTLS(t.Context(), srv.Addr, cfg)
		if err == nil {
			// TLS 1.3 clients finish before the server checks them; the refusal
			// shows on the first read.
			_, err = cl.Call(t.Context(), v12, uint32(kmip14.OperationDiscoverVersions), nil)
			cl.Close()
		}
		if err == nil {
			t.Fatalf("TLS %x: client without certificate was served", max)
		}
	}
	if !pollUntil(t, func() bool { return strings.Count(logs.String(), `level=WARN msg="tls handshake failed"`) == 2 }) {
		t.Errorf("handshake failures not logged:\n%s", logs.String())
	}
}

func TestTLSMinimumIsForced(t *testing.T) {
	t.Parallel()
	srv := kmiptest.NewServer(t, newScript(), func(s *kmip.Server) { s.TLSConfig.MinVersion = tls.VersionTLS10 })
	cfg := srv.PKI.ClientTLS(t, "old")
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS11, tls.VersionTLS11
	if cl, err := kmiptest.DialTLS(t.Context(), srv.Addr, cfg); err == nil {
		cl.Close()
		t.Fatal("TLS 1.1 handshake succeeded")
	}
}

// pollUntil polls cond with a deadline instead of sleeping a fixed time.
func pollUntil(t *testing.T, cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

func TestSequentialRequestsOnOneConnection(t *testing.T) {
	t.Parallel()
	srv := kmiptest.NewServer(t, newScript())
	cl := srv.Dial(t, "mongod")
	seen := map[string]bool{}
	for i := range 100 {
		v := msg.Supported[i%len(msg.Supported)]
		it, err := cl.Call(t.Context(), v, uint32(kmip14.OperationCreate), nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		uid := uidOf(it)
		if seen[uid] || !strings.HasPrefix(uid, "mongod/") {
			t.Fatalf("request %d: uid %q", i, uid)
		}
		seen[uid] = true
	}
}

func TestConcurrentConnections(t *testing.T) {
	t.Parallel()
	srv := kmiptest.NewServer(t, newScript())
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		identity := fmt.Sprintf("client-%d", i)
		cfg := srv.PKI.ClientTLS(t, identity)
		wg.Go(func() {
			cl, err := kmiptest.DialTLS(t.Context(), srv.Addr, cfg)
			if err != nil {
				errs <- err
				return
			}
			defer cl.Close()
			for range 5 {
				it, err := cl.Call(t.Context(), v12, uint32(kmip14.OperationCreate), nil)
				if err != nil {
					errs <- err
					return
				}
				if uid := uidOf(it); !strings.HasPrefix(uid, identity+"/") {
					errs <- fmt.Errorf("%s got %q", identity, uid)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestAbruptClose: clients that vanish mid-message or without close_notify (W13) are
// not an event worth a warning, and the server keeps serving.
func TestAbruptClose(t *testing.T) {
	t.Parallel()
	var logs logBuf
	srv := kmiptest.NewServer(t, newScript(), withLog(&logs))
	req := request(v10, nil, item(kmip14.OperationDiscoverVersions)).Append(nil)
	tests := []struct {
		name string
		send []byte
	}{
		{"after handshake", nil},
		{"mid header", req[:5]},
		{"mid body", req[:len(req)-3]},
	}
	for _, tt := range tests {
		cl := srv.Dial(t, "alice")
		if tt.send != nil {
			if _, err := cl.Conn().Write(tt.send); err != nil {
				t.Fatal(err)
			}
		}
		cl.Conn().(*tls.Conn).NetConn().Close() // no close_notify
	}
	if _, err := srv.Dial(t, "bob").Call(t.Context(), v10, uint32(kmip14.OperationDiscoverVersions), nil); err != nil {
		t.Fatal(err)
	}
	if !pollUntil(t, func() bool { return strings.Count(logs.String(), `msg="connection closed"`) >= len(tests) }) {
		t.Fatalf("connections not closed:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "level=WARN") || strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("abrupt closes logged above debug:\n%s", logs.String())
	}
}

// startServer runs a server outside kmiptest, for tests that own its lifecycle.
func startServer(t *testing.T, h kmip.Handler, opts ...func(*kmip.Server)) (*kmip.Server, *kmiptest.PKI, string, <-chan error) {
	t.Helper()
	pki := kmiptest.NewPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &kmip.Server{Handler: h, TLSConfig: pki.ServerTLS()}
	for _, o := range opts {
		o(srv)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return srv, pki, ln.Addr().String(), served
}

func TestShutdownWaitsForInFlightBatch(t *testing.T) {
	t.Parallel()
	h := newScript()
	srv, pki, addr, served := startServer(t, h)
	busy, err := kmiptest.DialTLS(t.Context(), addr, pki.ClientTLS(t, "busy"))
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	idle, err := kmiptest.DialTLS(t.Context(), addr, pki.ClientTLS(t, "idle"))
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	// The idle connection is known to the server once it has been served.
	if _, err := idle.Call(t.Context(), v12, uint32(kmip14.OperationDiscoverVersions), nil); err != nil {
		t.Fatal(err)
	}

	reply := make(chan error, 1)
	go func() {
		it, err := busy.Call(t.Context(), v12, uint32(kmip14.OperationCheck), nil)
		if err == nil {
			if status, _, m := kmiptest.Result(it); status != kmip14.ResultStatusSuccess {
				err = fmt.Errorf("check failed: %s", m)
			}
		}
		reply <- err
	}()
	<-h.started
	shutdown := make(chan error, 1)
	go func() { shutdown <- srv.Shutdown(t.Context()) }()

	// Serve returns at once; the idle connection is closed; the busy one is not.
	if err := <-served; !errors.Is(err, kmip.ErrServerClosed) {
		t.Fatalf("serve returned %v", err)
	}
	if _, err := idle.Call(t.Context(), v12, uint32(kmip14.OperationDiscoverVersions), nil); err == nil {
		t.Fatal("idle connection still served during shutdown")
	}
	select {
	case err := <-shutdown:
		t.Fatalf("shutdown returned %v with a batch in flight", err)
	default:
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("listener still accepting during shutdown")
	}

	close(h.release)
	if err := <-reply; err != nil {
		t.Fatalf("in-flight request: %v", err)
	}
	if err := <-shutdown; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	// The connection closes once its reply is written.
	if _, err := busy.Call(t.Context(), v12, uint32(kmip14.OperationDiscoverVersions), nil); err == nil {
		t.Fatal("connection still open after shutdown")
	}
	if err := srv.Serve(newListener(t)); !errors.Is(err, kmip.ErrServerClosed) {
		t.Fatalf("Serve after Shutdown returned %v", err)
	}
}

func newListener(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// TestShutdownDeadline: when the context ends first, everything is closed and running
// handlers see their context cancelled.
func TestShutdownDeadline(t *testing.T) {
	t.Parallel()
	h := newScript()
	srv, pki, addr, served := startServer(t, h)
	cl, err := kmiptest.DialTLS(t.Context(), addr, pki.ClientTLS(t, "slow"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	reply := make(chan error, 1)
	go func() {
		_, err := cl.Call(t.Context(), v12, uint32(kmip14.OperationCheck), nil)
		reply <- err
	}()
	<-h.started
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("shutdown returned %v", err)
	}
	if err := <-reply; err == nil {
		t.Fatal("client got a reply from a closed server")
	}
	if err := <-served; !errors.Is(err, kmip.ErrServerClosed) {
		t.Fatalf("serve returned %v", err)
	}
}

func TestMaxConns(t *testing.T) {
	t.Parallel()
	var logs logBuf
	_, pki, addr, _ := startServer(t, newScript(), withLog(&logs), func(s *kmip.Server) { s.MaxConns = 2 })
	call := func(cl *kmiptest.Client) error {
		_, err := cl.Call(t.Context(), v10, uint32(kmip14.OperationDiscoverVersions), nil)
		return err
	}
	var open []*kmiptest.Client
	for range 2 {
		cl, err := kmiptest.DialTLS(t.Context(), addr, pki.ClientTLS(t, "a"))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if err := call(cl); err != nil {
			t.Fatal(err)
		}
		open = append(open, cl)
	}
	if cl, err := kmiptest.DialTLS(t.Context(), addr, pki.ClientTLS(t, "a")); err == nil {
		err = call(cl)
		cl.Close()
		if err == nil {
			t.Fatal("third connection served with MaxConns 2")
		}
	}
	if !pollUntil(t, func() bool {
		return strings.Contains(logs.String(), `level=WARN msg="connection refused: limit reached"`)
	}) {
		t.Errorf("refusal not logged:\n%s", logs.String())
	}
	// A slot frees when a client leaves.
	open[0].Close()
	if !pollUntil(t, func() bool {
		cl, err := kmiptest.DialTLS(t.Context(), addr, pki.ClientTLS(t, "a"))
		if err != nil {
			return false
		}
		defer cl.Close()
		return call(cl) == nil
	}) {
		t.Fatal("no connection accepted after one closed")
	}
	if err := call(open[1]); err != nil {
		t.Fatalf("existing connection broken: %v", err)
	}
}

func TestServeNeedsHandlerAndTLS(t *testing.T) {
	t.Parallel()
	for _, s := range []*kmip.Server{{}, {Handler: newScript()}, {TLSConfig: &tls.Config{}}} {
		if err := s.Serve(newListener(t)); err == nil || errors.Is(err, kmip.ErrServerClosed) {
			t.Errorf("Serve on %+v returned %v", s, err)
		}
	}
}
