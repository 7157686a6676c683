//go:build e2e

package test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/test/framework"
)

// IdleConnsEnv sets how many connections TestIdleConnections holds; the target
// is 10000 (`HSMKMS_IDLE_CONNS=10000 go test -tags e2e -run TestIdleConnections -v
// ./test`), CI runs the default.
const IdleConnsEnv = "HSMKMS_IDLE_CONNS"

const defaultIdleConns = 2000

// TestIdleConnections opens N mutual-TLS connections to a real server, each completing
// one Get Attributes, keeps them all open and idle, and reports the server's resident
// memory per connection (VmRSS after minus before, over N). The server must hold every
// one of them: its open-connections gauge reads N and each connection still answers.
func TestIdleConnections(t *testing.T) {
	n := defaultIdleConns
	if s := os.Getenv(IdleConnsEnv); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("%s=%q is not a positive number", IdleConnsEnv, s)
		}
		n = v
	}
	// Each connection costs this process a descriptor too.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if need := uint64(n) + 200; lim.Cur < need {
		t.Skipf("open file limit %d is below the %d this test needs (raise the hard limit)", lim.Cur, need)
	}

	app := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{
		Env: []string{fmt.Sprintf("HSMKMS_SERVER_MAX_CONNECTIONS=%d", n+100)},
	})
	if !strings.Contains(app.Server.Logs(), "open file limit") {
		t.Errorf("serve did not log its open file limit:\n%s", app.Server.Logs())
	}
	s := openKMIP(t, app, app.AdminPEM, framework.Header{Version: ver12})
	id := createKey(s)
	getAttrs := framework.Request(framework.Header{Version: ver12},
		framework.Item(kmip14.OperationGetAttributes, nil, framework.UID(id))).Append(nil)
	cfg, err := framework.ClientTLS(framework.ReadFile(t, app.AdminPEM), framework.ReadFile(t, app.CAPEM))
	if err != nil {
		t.Fatal(err)
	}
	before, beforeMetrics := vmRSS(t, app.Server.PID()), scrape(t, app)

	start := time.Now()
	conns := make([]*framework.Client, n)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	next := make(chan int)
	for range 32 { // dialers: enough to keep both cores busy with handshakes
		wg.Go(func() {
			for i := range next {
				c, err := framework.DialTLS(t.Context(), app.Addr, cfg)
				if err == nil {
					_, err = c.RoundTripRaw(getAttrs)
				}
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("connection %d: %w", i, err)
				}
				conns[i] = c
				mu.Unlock()
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	opened := time.Since(start)

	// Every connection is counted open and idle in the server.
	if !pollFor(10*time.Second, func() bool {
		return scrape(t, app)["hsmkms_kmip_connections_open"] >= float64(n+1)
	}) {
		t.Fatalf("connections_open %v, want %d", scrape(t, app)["hsmkms_kmip_connections_open"], n+1)
	}
	after, afterMetrics := vmRSS(t, app.Server.PID()), scrape(t, app)
	perConn := float64(after-before) / float64(n)
	t.Logf("idle connections: %d opened in %v (%.0f/s); server VmRSS %.1f MiB before, %.1f MiB after: %.0f bytes (%.1f KiB) per connection",
		n, opened.Round(time.Millisecond), float64(n)/opened.Seconds(), float64(before)/(1<<20), float64(after)/(1<<20), perConn, perConn/1024)
	// The Go runtime's view splits it: live heap (TLS state, buffers, certificates) and
	// goroutine stacks; the rest of RSS is heap freed after the handshakes and not yet
	// returned to the OS.
	for _, m := range []string{"go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes"} {
		t.Logf("  %s: %.0f bytes per connection", m, (afterMetrics[m]-beforeMetrics[m])/float64(n))
	}

	// The oldest and newest connections still answer.
	for _, i := range []int{0, n / 2, n - 1} {
		if _, err := conns[i].RoundTripRaw(getAttrs); err != nil {
			t.Errorf("connection %d after holding all: %v", i, err)
		}
	}
	if perConn > 200<<10 {
		t.Errorf("%.0f bytes per idle connection; expected well under 200 KiB", perConn)
	}
}

// vmRSS reads a process's resident set size in bytes from /proc/PID/status.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("parse VmRSS %q: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// pollFor polls cond until it holds or timeout passes.
func pollFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}
