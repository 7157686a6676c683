package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"
)

// RawRater measures the raw PKCS#11 rate of an operation on a token. *hsm.Token
// implements it; cmd opens that token and hands it in.
type RawRater interface {
	RawRate(ctx context.Context, op string, workers int, d time.Duration) (float64, error)
}

// DefaultPyKMIPDuration caps each PyKMIP run: PyKMIP is slow, so a short run already
// completes enough operations for stable numbers.
const DefaultPyKMIPDuration = 2 * time.Second

// Config configures Run.
type Config struct {
	Binary         string        // the hsmkms executable to init and serve
	Duration       time.Duration // each hsmkms and raw run
	PyKMIPDuration time.Duration // each PyKMIP run; 0 means min(Duration, DefaultPyKMIPDuration)
	SkipPyKMIP     bool
	Raw            RawRater  // nil: no raw ceiling
	RawNote        string    // how the raw token relates to the server's, for the report
	Progress       io.Writer // one line per finished run; nil discards
}

// Validate checks the fields Run needs.
func (c Config) Validate() error {
	var errs []error
	if c.Binary == "" {
		errs = append(errs, errors.New("the hsmkms binary is not set"))
	}
	if c.Duration <= 0 || c.PyKMIPDuration < 0 {
		errs = append(errs, errors.New("durations must be positive"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("validate bench config: %w", err)
	}
	return nil
}

func (c Config) pykmipDuration() time.Duration {
	if c.PyKMIPDuration > 0 {
		return c.PyKMIPDuration
	}
	return min(c.Duration, DefaultPyKMIPDuration)
}

// Run creates an appliance in a temporary directory, serves it, and measures every
// workload at every concurrency level; then does the same against PyKMIP (unless
// skipped or not installed) and measures the raw PKCS#11 ceilings. The servers run one
// at a time, so neither steals the other's CPU. Child processes are stopped and the
// directory removed before Run returns, also when ctx is cancelled.
//
// A failed operation on hsmkms ends Run with its reason. A PyKMIP that cannot start or
// fails is reported, not fatal: it is the baseline, not the system under test.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "hsmkms-bench-")
	if err != nil {
		return nil, fmt.Errorf("run bench: %w", err)
	}
	defer os.RemoveAll(dir)
	progress := cfg.Progress
	if progress == nil {
		progress = io.Discard
	}
	rep := &Report{Setup: []string{
		fmt.Sprintf("machine: %s/%s, %d CPUs (GOMAXPROCS %d); servers and load generator share it",
			runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0)),
		loadAverage(),
		fmt.Sprintf("KMIP %s over mutual TLS on 127.0.0.1, one persistent connection per client; %s per hsmkms and raw run, %s per PyKMIP run",
			protocol, cfg.Duration, cfg.pykmipDuration()),
		fmt.Sprintf("Get, Get Attributes (State) and Encrypt cycle through %d active AES-256 keys made beforehand; Create makes AES-256 keys (Encrypt|Decrypt)", fixtureKeys),
		"Encrypt: 64 bytes, AES-CBC with PKCS5 padding named in Cryptographic Parameters (PyKMIP requires them), IV chosen by the server",
		"New connection: a full TLS handshake (no session resumption; TLS 1.3 with hsmkms, 1.2 with PyKMIP, which speaks nothing else), one Get, close",
		"p50 and p99 are exact, over every operation of the hsmkms run",
	}}
	for _, w := range workloads {
		for _, n := range clientCounts {
			rep.Rows = append(rep.Rows, Row{Op: w.name, Clients: n})
		}
	}

	srv, ours, err := startHsmkms(ctx, cfg.Binary, dir)
	if err != nil {
		return nil, fmt.Errorf("run bench: %w", err)
	}
	err = measureAll(ctx, ours, cfg.Duration, rep, progress, func(r *Row, s Sample) { r.Ours = s })
	srv.stop()
	if err != nil {
		if ctx.Err() == nil { // a real failure: the server's log may say why
			err = fmt.Errorf("%w\nhsmkms log:\n%s", err, srv.tail())
		}
		return nil, fmt.Errorf("run bench: %w", err)
	}

	rep.PyKMIP = measurePyKMIP(ctx, cfg, dir, ours, rep, progress)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("run bench: %w", err)
	}

	if cfg.Raw == nil {
		rep.Raw = "not measured"
	} else {
		rep.Setup = append(rep.Setup, "raw PKCS#11 ceilings: "+cfg.RawNote)
		if err := measureRaw(ctx, cfg, rep, progress); err != nil {
			return nil, fmt.Errorf("run bench: %w", err)
		}
	}
	return rep, nil
}

// loadAverage describes how busy the machine was before the bench started: other
// work on a 2-core machine moves every number.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return fmt.Sprintf("load average before the run: %s %s %s (1, 5, 15 min)", f[0], f[1], f[2])
	}
	return "load average before the run: unknown"
}

// measureAll runs every workload at every concurrency level against t, in the order
// of rep.Rows, and stores each Sample with set.
func measureAll(ctx context.Context, t *target, d time.Duration, rep *Report, progress io.Writer, set func(*Row, Sample)) error {
	if err := t.prepare(ctx); err != nil {
		return err
	}
	i := 0
	for _, w := range workloads {
		for _, n := range clientCounts {
			s, err := t.measure(ctx, w, n, d)
			if err != nil {
				return err
			}
			set(&rep.Rows[i], s)
			i++
			fmt.Fprintf(progress, "%-7s %-27s %s: %s ops/s, p50 %s, p99 %s\n",
				t.name, w.name, clientsLabel(n), fmtRate(s.Rate()), fmtLatency(s.P50), fmtLatency(s.P99))
		}
	}
	return nil
}

// measurePyKMIP fills in the PyKMIP column and returns "" or why it is empty.
func measurePyKMIP(ctx context.Context, cfg Config, dir string, ours *target, rep *Report, progress io.Writer) string {
	if cfg.SkipPyKMIP {
		return "skipped"
	}
	p, py, err := startPyKMIP(ctx, dir, ours)
	if err != nil {
		fmt.Fprintf(progress, "PyKMIP: unavailable: %v\n", err)
		return fmt.Sprintf("unavailable (%v)", err)
	}
	err = measureAll(ctx, py, cfg.pykmipDuration(), rep, progress, func(r *Row, s Sample) { r.PyKMIP = &s })
	p.stop()
	if err != nil {
		// No partial column: a baseline that failed halfway is not a baseline.
		for i := range rep.Rows {
			rep.Rows[i].PyKMIP = nil
		}
		fmt.Fprintf(progress, "PyKMIP: failed: %v\n%s\n", err, p.tail())
		return fmt.Sprintf("failed (%v)", err)
	}
	return ""
}

// measureRaw fills in the raw PKCS#11 column.
func measureRaw(ctx context.Context, cfg Config, rep *Report, progress io.Writer) error {
	raw := map[string]string{}
	for _, w := range workloads {
		raw[w.name] = w.raw
	}
	for i := range rep.Rows {
		r := &rep.Rows[i]
		op := raw[r.Op]
		if op == "" {
			continue
		}
		rate, err := cfg.Raw.RawRate(ctx, op, r.Clients, cfg.Duration)
		if err != nil {
			return fmt.Errorf("measure raw PKCS#11 %s with %d workers: %w", op, r.Clients, err)
		}
		r.Raw = rate
		fmt.Fprintf(progress, "raw     %-27s %s: %s ops/s\n", op, clientsLabel(r.Clients), fmtRate(rate))
	}
	return nil
}
