package vectors

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sort"
	"time"

	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/kmip/wire"
)

// maxReply bounds a reply; vectors never come close.
const maxReply = 16 << 20

// Status is the outcome of one file.
type Status int

// Outcomes.
const (
	Passed Status = iota
	Failed
	Skipped
)

func (s Status) String() string { return [...]string{"PASS", "FAIL", "SKIP"}[s] }

// Result is the outcome of one file. Detail is the first difference or error of a
// failure, or the reason of a skip.
type Result struct {
	File   string
	Status Status
	Detail string
}

// Summary is the outcome of a run.
type Summary struct {
	Results                 []Result
	Passed, Failed, Skipped int
}

// Runner replays conversations against one server. Each file gets its own TLS
// connection; its messages go over it in order.
type Runner struct {
	Addr      string
	TLS       *tls.Config
	Skip      map[string]string // base file name → reason
	Timeout   time.Duration     // per message; zero means 30 s
	Tolerance time.Duration     // for time stamps; zero means DefaultTolerance

	// created holds the identifiers of every object the server generated during
	// this Runner's life: a conversation may use a key an earlier one created (the
	// Tape Library files TL-M-2 and TL-M-3 do), and that key's material is as random
	// there as where it was made. A Runner runs one file at a time.
	created map[string]bool
}

// RunAll runs every file, writes one line per file to w, then the totals and the skip
// list with reasons.
func (r *Runner) RunAll(ctx context.Context, files []string, w io.Writer) Summary {
	var s Summary
	for _, f := range files {
		res := r.Run(ctx, f)
		s.Results = append(s.Results, res)
		switch res.Status {
		case Passed:
			s.Passed++
			fmt.Fprintf(w, "PASS %s\n", res.File)
		case Failed:
			s.Failed++
			fmt.Fprintf(w, "FAIL %s: %s\n", res.File, res.Detail)
		case Skipped:
			s.Skipped++
		}
	}
	fmt.Fprintf(w, "%d passed, %d failed, %d skipped\n", s.Passed, s.Failed, s.Skipped)
	var skipped []Result
	for _, res := range s.Results {
		if res.Status == Skipped {
			skipped = append(skipped, res)
		}
	}
	sort.Slice(skipped, func(i, j int) bool { return skipped[i].File < skipped[j].File })
	for _, res := range skipped {
		fmt.Fprintf(w, "SKIP %s: %s\n", res.File, res.Detail)
	}
	return s
}

// Run replays one file.
func (r *Runner) Run(ctx context.Context, path string) Result {
	name := filepath.Base(path)
	if reason, ok := r.Skip[name]; ok {
		return Result{File: name, Status: Skipped, Detail: reason}
	}
	if err := r.run(ctx, path); err != nil {
		return Result{File: name, Status: Failed, Detail: err.Error()}
	}
	return Result{File: name, Status: Passed}
}

func (r *Runner) run(ctx context.Context, path string) error {
	conv, err := Load(path)
	if err != nil {
		return err
	}
	cfg := r.TLS.Clone()
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(r.Addr)
		if err != nil {
			return fmt.Errorf("dial %s: %w", r.Addr, err)
		}
		cfg.ServerName = host
	}
	d := tls.Dialer{Config: cfg, NetDialer: &net.Dialer{Timeout: 10 * time.Second}}
	conn, err := d.DialContext(ctx, "tcp", r.Addr)
	if err != nil {
		return fmt.Errorf("dial %s: %w", r.Addr, err)
	}
	defer conn.Close()
	if r.created == nil {
		r.created = map[string]bool{}
	}
	st := NewState()
	st.Created = r.created
	st.Tolerance = r.Tolerance
	for i, step := range conv.Steps {
		if err := r.step(ctx, conn, st, step); err != nil {
			return fmt.Errorf("message %d (line %d): %w", i+1, step.Line, err)
		}
	}
	return nil
}

func (r *Runner) step(ctx context.Context, conn net.Conn, st *State, step Step) error {
	breq, err := bind(step.Request, st.Vars, time.Now(), true)
	if err != nil {
		return err
	}
	req, err := Encode(breq)
	if err != nil {
		return err
	}
	st.RecordSent(req)
	timeout := r.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	deadline := time.Now().Add(timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	if err := conn.SetDeadline(deadline); err != nil {
		return fmt.Errorf("send request: %w", err)
	}
	if _, err := conn.Write(req.Append(nil)); err != nil {
		return fmt.Errorf("send request: %w", err)
	}
	b, err := wire.ReadMessage(conn, maxReply)
	if errors.Is(err, io.EOF) {
		return errors.New("server closed the connection instead of replying")
	}
	if err != nil {
		return fmt.Errorf("read reply: %w", err)
	}
	act, err := msg.Decode(b)
	if err != nil {
		return fmt.Errorf("decode reply: %w", err)
	}
	bexp, err := bind(step.Response, st.Vars, time.Now(), false)
	if err != nil {
		return err
	}
	exp, err := Encode(bexp)
	if err != nil {
		return err
	}
	if d := Compare(st, req, exp, bexp, act); d != nil {
		return d
	}
	return nil
}
