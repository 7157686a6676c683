package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hsmkms/hsmkms/mirror"
)

// Mirroring targets of the issue.
const (
	maxLagP99      = 100 * time.Millisecond // replication lag p99 on loopback
	minAckAllRatio = 0.5                    // Create with write_ack=all vs local
)

// MirrorReport is what RunMirror measured on two paired appliances.
type MirrorReport struct {
	Local, All     Sample        // Create on A with MaxClients clients, write_ack local / all
	LagP50, LagP99 time.Duration // A's commit to B's commit, during the local run
	LagSamples     int
}

// Ratio is the write_ack=all Create rate over the local one.
func (m *MirrorReport) Ratio() float64 {
	if m.Local.Rate() == 0 {
		return 0
	}
	return m.All.Rate() / m.Local.Rate()
}

func (m *MirrorReport) verdicts() []Verdict {
	return []Verdict{
		verdict(m.LagSamples > 0 && m.LagP99 < maxLagP99, "mirror replication lag under sustained Create: p50 %s, p99 %s over %d objects (target p99 < %s)",
			fmtLatency(m.LagP50), fmtLatency(m.LagP99), m.LagSamples, maxLagP99),
		verdict(m.Ratio() >= minAckAllRatio, "Create with write_ack=all: %s ops/s = %.0f%% of write_ack=local's %s ops/s (target ≥ %.0f%%)",
			fmtRate(m.All.Rate()), 100*m.Ratio(), fmtRate(m.Local.Rate()), 100*minAckAllRatio),
	}
}

func (m *MirrorReport) markdown(b io.Writer) {
	fmt.Fprintf(b, "\n### Mirroring (two appliances on this machine, each with its own SoftHSM2 token and database)\n\n")
	fmt.Fprintf(b, "| measure | %s |\n|---|--:|\n", clientsLabel(MaxClients))
	fmt.Fprintf(b, "| Create, write_ack=local (ops/s, p50, p99) | %s, %s, %s |\n", fmtRate(m.Local.Rate()), fmtLatency(m.Local.P50), fmtLatency(m.Local.P99))
	fmt.Fprintf(b, "| Create, write_ack=all (ops/s, p50, p99) | %s, %s, %s |\n", fmtRate(m.All.Rate()), fmtLatency(m.All.P50), fmtLatency(m.All.P99))
	fmt.Fprintf(b, "| all / local | %.0f%% |\n", 100*m.Ratio())
	fmt.Fprintf(b, "| replication lag p50 / p99 (local run, last %d objects) | %s / %s |\n", m.LagSamples, fmtLatency(m.LagP50), fmtLatency(m.LagP99))
}

// mirrored is one of the two appliances.
type mirrored struct {
	app    appliance
	name   string
	listen string // its mirror listener
	addr   string // its KMIP listener
	proc   *proc
}

func (m *mirrored) env(ack string) []string {
	return []string{
		"HSMKMS_MIRROR_ENABLED=true",
		"HSMKMS_MIRROR_LISTEN=" + m.listen,
		"HSMKMS_MIRROR_NAME=" + m.name,
		"HSMKMS_MIRROR_WRITE_ACK=" + ack,
		"HSMKMS_ADMIN_LISTEN=",
	}
}

// RunMirror pairs two throwaway appliances A and B and measures, on A with
// MaxClients clients: Create with write_ack=local while B applies the stream
// (whose lag B records), then Create with write_ack=all after restarting A.
func RunMirror(ctx context.Context, cfg Config) (*MirrorReport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	progress := cfg.Progress
	if progress == nil {
		progress = io.Discard
	}
	dir, err := os.MkdirTemp("", "hsmkms-bench-mirror-")
	if err != nil {
		return nil, fmt.Errorf("run mirror bench: %w", err)
	}
	defer os.RemoveAll(dir)
	nodes := []*mirrored{{name: "a"}, {name: "b"}}
	for _, n := range nodes {
		n.app = appliance{dir: filepath.Join(dir, n.name)}
		if err := runOnce(ctx, cfg.Binary, "init", "--dir", n.app.dir); err != nil {
			return nil, fmt.Errorf("run mirror bench: %w", err)
		}
		port, err := freePort()
		if err != nil {
			return nil, fmt.Errorf("run mirror bench: %w", err)
		}
		n.listen = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	}
	defer func() {
		for _, n := range nodes {
			if n.proc != nil {
				n.proc.stop()
			}
		}
	}()
	a, b := nodes[0], nodes[1]
	for _, n := range nodes {
		if err := n.serve(ctx, cfg.Binary, "local", dir); err != nil {
			return nil, fmt.Errorf("run mirror bench: %w", err)
		}
	}
	if err := pairNodes(ctx, cfg.Binary, dir, a, b); err != nil {
		return nil, fmt.Errorf("run mirror bench: %w", err)
	}
	if err := waitStatus(ctx, cfg.Binary, a, 30*time.Second, func(p peerStatus) bool { return p.State == "in-sync" }); err != nil {
		return nil, fmt.Errorf("run mirror bench: pair: %w", err)
	}
	create := workloads[0]
	rep := &MirrorReport{}
	tlsA, err := a.app.clientTLS()
	if err != nil {
		return nil, fmt.Errorf("run mirror bench: %w", err)
	}
	ta := &target{name: "hsmkms A", addr: a.addr, tls: tlsA}
	if rep.Local, err = ta.measure(ctx, create, MaxClients, cfg.Duration); err != nil {
		return nil, fmt.Errorf("run mirror bench: %w", err)
	}
	fmt.Fprintf(progress, "mirror: Create write_ack=local, %s: %s ops/s\n", clientsLabel(MaxClients), fmtRate(rep.Local.Rate()))
	// B has applied everything once A sees no lag; B's status then holds the lags.
	if err := waitStatus(ctx, cfg.Binary, a, 2*time.Minute, func(p peerStatus) bool { return p.LagEntries == 0 && p.State == "in-sync" }); err != nil {
		return nil, fmt.Errorf("run mirror bench: catch up: %w", err)
	}
	time.Sleep(2 * time.Second) // B writes its status every second
	st, err := status(ctx, cfg.Binary, b)
	if err != nil {
		return nil, fmt.Errorf("run mirror bench: %w", err)
	}
	rep.LagP50, rep.LagP99 = time.Duration(st.LagP50MS)*time.Millisecond, time.Duration(st.LagP99MS)*time.Millisecond
	rep.LagSamples = min(mirror.LagWindow, rep.Local.Ops)

	a.proc.stop()
	if err := a.serveAt(ctx, cfg.Binary, "all", dir, a.addr); err != nil {
		return nil, fmt.Errorf("run mirror bench: %w", err)
	}
	if err := waitStatus(ctx, cfg.Binary, a, 30*time.Second, func(p peerStatus) bool { return p.State == "in-sync" }); err != nil {
		return nil, fmt.Errorf("run mirror bench: reconnect: %w", err)
	}
	if rep.All, err = ta.measure(ctx, create, MaxClients, cfg.Duration); err != nil {
		return nil, fmt.Errorf("run mirror bench: %w", err)
	}
	fmt.Fprintf(progress, "mirror: Create write_ack=all, %s: %s ops/s\n", clientsLabel(MaxClients), fmtRate(rep.All.Rate()))
	return rep, nil
}

func (n *mirrored) serve(ctx context.Context, bin, ack, dir string) error {
	cfg, err := n.app.clientTLS()
	if err != nil {
		return err
	}
	p, addr, err := serveOnFreePort(ctx, cfg, func(addr string) (*proc, error) {
		return startProcEnv("hsmkms "+n.name, filepath.Join(dir, n.name+".log"), dir, n.env(ack),
			bin, "serve", "--dir", n.app.dir, "--listen", addr)
	})
	if err != nil {
		return err
	}
	n.proc, n.addr = p, addr
	return nil
}

func (n *mirrored) serveAt(ctx context.Context, bin, ack, dir, addr string) error {
	cfg, err := n.app.clientTLS()
	if err != nil {
		return err
	}
	p, err := startProcEnv("hsmkms "+n.name, filepath.Join(dir, n.name+".log"), dir, n.env(ack),
		bin, "serve", "--dir", n.app.dir, "--listen", addr)
	if err != nil {
		return err
	}
	n.proc = p
	return p.waitTLS(ctx, addr, cfg)
}

// pairNodes runs `mirror invite` on a and `mirror join` on b.
func pairNodes(ctx context.Context, bin, dir string, a, b *mirrored) error {
	// The CLI reads the same [mirror] overrides as serve: the invitation names
	// a's mirror address, the join tells a where b listens.
	ic := exec.CommandContext(ctx, bin, "mirror", "invite", "--dir", a.app.dir)
	ic.Env = append(childEnv(), a.env("local")...)
	inv, err := ic.Output()
	if err != nil {
		return fmt.Errorf("mirror invite: %w", err)
	}
	f := filepath.Join(dir, "invite")
	if err := os.WriteFile(f, inv, 0o600); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, "mirror", "join", "--yes", "--dir", b.app.dir, "--invite-file", f)
	cmd.Env = append(childEnv(), b.env("local")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mirror join: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// peerStatus is the one peer of `mirror status --json`.
type peerStatus struct {
	State      string `json:"state"`
	LagEntries int64  `json:"lag_entries"`
	LagP50MS   int64  `json:"lag_p50_ms"`
	LagP99MS   int64  `json:"lag_p99_ms"`
	LastError  string `json:"last_error"`
}

func status(ctx context.Context, bin string, n *mirrored) (peerStatus, error) {
	cmd := exec.CommandContext(ctx, bin, "mirror", "status", "--json", "--dir", n.app.dir)
	cmd.Env = childEnv()
	out, err := cmd.Output()
	if err != nil {
		return peerStatus{}, fmt.Errorf("mirror status of %s: %w", n.name, err)
	}
	var st struct{ Peers []peerStatus }
	if err := json.Unmarshal(out, &st); err != nil {
		return peerStatus{}, fmt.Errorf("mirror status of %s: %w", n.name, err)
	}
	if len(st.Peers) != 1 {
		return peerStatus{}, fmt.Errorf("mirror status of %s: %d peers, want 1", n.name, len(st.Peers))
	}
	return st.Peers[0], nil
}

func waitStatus(ctx context.Context, bin string, n *mirrored, timeout time.Duration, ok func(peerStatus) bool) error {
	deadline := time.Now().Add(timeout)
	var last peerStatus
	for time.Now().Before(deadline) {
		st, err := status(ctx, bin, n)
		if err == nil && ok(st) {
			return nil
		}
		last = st
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s: peer still %s (lag %d entries, error %q) after %s", n.name, last.State, last.LagEntries, last.LastError, timeout)
}
