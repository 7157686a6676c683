package admin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/kmip"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestReadyz(t *testing.T) {
	t.Parallel()
	ok := func(context.Context) error { return nil }
	fail := func(msg string) func(context.Context) error {
		return func(context.Context) error { return errors.New(msg) }
	}
	tests := []struct {
		name     string
		checks   []Check
		code     int
		contains []string
		absent   []string
	}{
		{"all ready", []Check{{"token", ok}, {"store", ok}, {"kmip", ok}}, 200,
			[]string{"token: ok", "store: ok", "kmip: ok"}, []string{"not ready"}},
		{"token down", []Check{{"token", fail("hsm: token unavailable")}, {"store", ok}, {"kmip", ok}}, 503,
			[]string{"token: not ready: hsm: token unavailable", "store: ok", "kmip: ok"}, nil},
		{"store and listener down", []Check{{"token", ok}, {"store", fail("meta: store closed")}, {"kmip", fail("not accepting")}}, 503,
			[]string{"token: ok", "store: not ready: meta: store closed", "kmip: not ready: not accepting"}, nil},
		{"stuck check times out", []Check{{"token", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }}}, 503,
			[]string{"token: not ready: context deadline exceeded"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, body := get(t, Handler(NewMetrics(), tt.checks), "/readyz")
			if code != tt.code {
				t.Errorf("code %d, want %d; body:\n%s", code, tt.code, body)
			}
			for _, s := range tt.contains {
				if !strings.Contains(body, s) {
					t.Errorf("body lacks %q:\n%s", s, body)
				}
			}
			for _, s := range tt.absent {
				if strings.Contains(body, s) {
					t.Errorf("body has %q:\n%s", s, body)
				}
			}
		})
	}
}

func TestHealthzAndMetrics(t *testing.T) {
	t.Parallel()
	m := NewMetrics()
	h := Handler(m, nil)
	if code, body := get(t, h, "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("healthz: %d %q", code, body)
	}
	if code, _ := get(t, h, "/nothing"); code != 404 {
		t.Errorf("unknown path: %d", code)
	}

	// Every hook moves its metric.
	m.OnConnOpen()
	m.OnConnOpen()
	m.OnConnClose()
	m.OnHandshakeError(kmip.CauseRevoked)
	m.OnLimit(kmip.LimitClientRequests)
	m.ObserveItem("Create", "Success", 3*time.Millisecond)
	m.ObserveItem("Get", "ItemNotFound", time.Millisecond)
	m.ObserveCommit(2*time.Millisecond, 7)
	m.WatchToken(func() hsm.Stats {
		return hsm.Stats{Sessions: 6, SessionsInUse: 2, Errors: map[string]uint64{"CKR_DEVICE_REMOVED": 3}}
	})
	var last time.Time
	m.SetLastBackup(func() (time.Time, bool) { return last, !last.IsZero() })
	m.WatchMirror(func() []MirrorPeer {
		return []MirrorPeer{{ID: "p1", Name: "b", State: "error", LagEntries: 12, Lag: 3 * time.Second, LagP99: 80 * time.Millisecond}}
	})

	_, body := get(t, h, "/metrics")
	for _, want := range []string{
		`hsmkms_kmip_requests_total{operation="Create",result="Success"} 1`,
		`hsmkms_kmip_requests_total{operation="Get",result="ItemNotFound"} 1`,
		`hsmkms_kmip_request_duration_seconds_count{operation="Create"} 1`,
		`hsmkms_kmip_connections_open 1`,
		`hsmkms_tls_handshake_failures_total{cause="revoked"} 1`,
		`hsmkms_tls_handshake_failures_total{cause="no_cert"} 0`,
		`hsmkms_limit_hits_total{limit="max_requests_per_client"} 1`,
		`hsmkms_limit_hits_total{limit="idle_timeout"} 0`,
		`hsmkms_store_commit_duration_seconds_count 1`,
		`hsmkms_store_commit_batch_size_sum 7`,
		`hsmkms_hsm_sessions 6`,
		`hsmkms_hsm_sessions_in_use 2`,
		`hsmkms_hsm_errors_total{ckr="CKR_DEVICE_REMOVED"} 3`,
		`hsmkms_mirror_peer_in_sync{name="b",peer="p1",state="error"} 0`,
		`hsmkms_mirror_lag_entries{peer="p1"} 12`,
		`hsmkms_mirror_lag_seconds{peer="p1"} 3`,
		`hsmkms_mirror_replication_lag_seconds{peer="p1",quantile="0.99"} 0.08`,
		`process_resident_memory_bytes`,
	} {
		if !strings.Contains(body, want+"\n") && !strings.Contains(body, want+" ") {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(body, "hsmkms_backup_age_seconds ") {
		t.Error("backup age exported before any backup")
	}
	last = time.Now().Add(-time.Hour)
	if _, body := get(t, h, "/metrics"); !strings.Contains(body, "hsmkms_backup_age_seconds 3") {
		t.Errorf("backup age missing or wrong after a backup:\n%s", grep(body, "backup"))
	}
}

func grep(body, s string) string {
	var out []string
	for l := range strings.SplitSeq(body, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestStartShutdown(t *testing.T) {
	t.Parallel()
	s, err := Start("127.0.0.1:0", Handler(NewMetrics(), nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + s.Addr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "ok\n" {
		t.Errorf("healthz over the listener: %d %q", resp.StatusCode, b)
	}
	if _, err := Start(s.Addr(), Handler(NewMetrics(), nil), nil); err == nil {
		t.Error("a second listener on the same address started")
	}
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + s.Addr() + "/healthz"); err == nil {
		t.Error("served after Shutdown")
	}
}
