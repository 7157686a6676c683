package framework

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BinEnv names an hsmkms binary to test instead of building one (`make e2e` sets it).
// A relative path is relative to the test package directory, so pass an absolute one.
const BinEnv = "HSMKMS_BIN"

// Build returns the hsmkms binary to test: $HSMKMS_BIN when set, otherwise a fresh
// build of ./cmd/hsmkms in a temporary directory that cleanup removes. Call it once
// from TestMain; building per test would cost seconds each.
func Build() (bin string, cleanup func(), err error) {
	if bin := os.Getenv(BinEnv); bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			return "", nil, fmt.Errorf("find %s=%s: %w", BinEnv, bin, err)
		}
		if _, err := os.Stat(abs); err != nil {
			return "", nil, fmt.Errorf("find %s=%s: %w", BinEnv, bin, err)
		}
		return abs, func() {}, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", nil, err
	}
	dir, err := os.MkdirTemp("", "hsmkms-e2e-")
	if err != nil {
		return "", nil, fmt.Errorf("build hsmkms: %w", err)
	}
	bin = filepath.Join(dir, "hsmkms")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/hsmkms")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("build hsmkms: %w\n%s", err, out)
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}

// RepoRoot is the directory of the module's go.mod, found with `go env GOMOD` from
// the working directory (a test runs in its package directory).
func RepoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find repository root: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("find repository root: not inside a Go module")
	}
	return filepath.Dir(mod), nil
}

// Process is a child process whose output is kept. It runs in its own process group,
// so Kill also reaches anything it spawned.
type Process struct {
	Name string   // used in log headers
	Path string   // the executable
	Args []string // without the executable
	Env  []string // added to the test's environment
	Dir  string   // working directory; "" is the test's

	t    testing.TB
	logs *logBuffer

	mu    sync.Mutex
	cmd   *exec.Cmd
	done  chan struct{} // closed when the current run exited
	state *os.ProcessState
	err   error // Wait's error for the current run
}

// Start runs path with args and registers a cleanup that kills it if it still runs
// and prints its output if the test failed.
func Start(t testing.TB, name, path string, args ...string) *Process {
	t.Helper()
	p := New(t, name, path, args...)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	return p
}

// New prepares a Process without starting it, so Env and Dir can be set first.
func New(t testing.TB, name, path string, args ...string) *Process {
	p := &Process{Name: name, Path: path, Args: args, t: t, logs: &logBuffer{}}
	t.Cleanup(func() {
		if p.Running() {
			p.Kill()
		}
		if t.Failed() {
			t.Logf("---- output of %s (%s %s) ----\n%s---- end of %s ----", p.Name, p.Path, strings.Join(p.Args, " "), p.Logs(), p.Name)
		}
	})
	return p
}

// Start runs the process (again, after it exited: that is a restart, and the logs
// continue with a marker line).
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("start %s: already running", p.Name)
		}
		fmt.Fprintf(p.logs, "---- restart of %s ----\n", p.Name)
	}
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Dir = p.Dir
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.state, p.err = cmd, done, nil, nil
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.state, p.err = cmd.ProcessState, err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// Running reports whether the process was started and has not exited.
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Exited returns a channel closed when the current run ends.
func (p *Process) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// PID is the current run's process ID; call it only after Start.
func (p *Process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// Signal sends sig to the process (not its group).
func (p *Process) Signal(sig os.Signal) error {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("signal %s: not started", p.Name)
	}
	return cmd.Process.Signal(sig)
}

// Wait waits up to timeout for the process to exit and returns its exit code
// (-1 when killed by a signal). It fails if the process still runs at the timeout.
func (p *Process) Wait(timeout time.Duration) (int, error) {
	select {
	case <-p.Exited():
	case <-time.After(timeout):
		return 0, fmt.Errorf("wait for %s: still running after %v", p.Name, timeout)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.ExitCode(), nil
}

// Stop sends SIGTERM and waits up to timeout for the exit, returning the exit code.
// A process still running at the timeout is killed and Stop returns an error.
func (p *Process) Stop(timeout time.Duration) (int, error) {
	if err := p.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return 0, fmt.Errorf("stop %s: %w", p.Name, err)
	}
	code, err := p.Wait(timeout)
	if err != nil {
		p.Kill()
		return 0, fmt.Errorf("stop %s: no exit within %v of SIGTERM, killed", p.Name, timeout)
	}
	return code, nil
}

// Kill sends SIGKILL to the whole process group (kill -9, no cleanup in the
// process) and waits for the exit.
func (p *Process) Kill() {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	// The negative PID addresses the group Setpgid created.
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-p.Exited()
}

// Restart stops the process with SIGTERM (kill after timeout) and starts it again
// with the same arguments.
func (p *Process) Restart(timeout time.Duration) error {
	if _, err := p.Stop(timeout); err != nil {
		return err
	}
	return p.Start()
}

// Logs returns everything the process wrote to stdout and stderr so far, across
// restarts.
func (p *Process) Logs() string { return p.logs.String() }

// WaitForLog polls the output until it contains substr, the process exits or the
// timeout passes.
func (p *Process) WaitForLog(substr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if strings.Contains(p.Logs(), substr) {
			return nil
		}
		select {
		case <-p.Exited():
			if strings.Contains(p.Logs(), substr) {
				return nil
			}
			return fmt.Errorf("wait for %q in %s: process exited", substr, p.Name)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait for %q in %s: not seen within %v", substr, p.Name, timeout)
		}
	}
}

// logBuffer is a bytes.Buffer safe for the two copy goroutines exec starts.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(b)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Result is the outcome of a command run to completion.
type Result struct {
	Stdout, Stderr string
	ExitCode       int
}

// Run runs path with args to completion (at most timeout) with extra environment
// env, and returns its output and exit code. Only a failure to run at all, or the
// timeout, is an error: a non-zero exit is in Result.
func Run(ctx context.Context, timeout time.Duration, env []string, path string, args ...string) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := Result{Stdout: stdout.String(), Stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return res, fmt.Errorf("run %s %s: %w\nstderr: %s", path, strings.Join(args, " "), ctx.Err(), res.Stderr)
	case errors.As(err, &exit):
		res.ExitCode = exit.ExitCode()
	case err != nil:
		return res, fmt.Errorf("run %s: %w", path, err)
	}
	return res, nil
}

// FreeAddr returns a loopback address whose port was free a moment ago. Another
// process may take it before the caller binds; StartAppliance retries for that.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// FreePort is FreeAddr's port.
func FreePort(t testing.TB) int {
	t.Helper()
	return mustPort(t, FreeAddr(t))
}

func mustPort(t testing.TB, addr string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// WaitForPort polls until addr accepts a TCP connection, p (if not nil) exits, or
// timeout passes.
func WaitForPort(addr string, p *Process, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var exited <-chan struct{}
	if p != nil {
		exited = p.Exited()
	}
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("wait for %s: %s exited", addr, p.Name)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait for %s: %w (after %v)", addr, err, timeout)
		}
	}
}
