package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// startTimeout bounds how long a server may take to accept its first TLS connection.
const startTimeout = 60 * time.Second

// stopGrace is how long a server gets after SIGTERM before its process group is killed.
const stopGrace = 5 * time.Second

// proc is a child server process. It runs in its own process group so that stop
// reaches its helpers too (PyKMIP forks a multiprocessing manager), and so that a
// ctrl-C in the terminal reaches only the bench, which then stops it in order.
type proc struct {
	name string
	log  string // file holding its stdout and stderr
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // exit status; read after done
}

// childEnv is the bench's environment without SOFTHSM2_CONF: the bench process sets it
// for its own raw-measurement token, and a child must use its own configuration.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SOFTHSM2_CONF=") {
			env = append(env, kv)
		}
	}
	return env
}

// runOnce runs a short command (such as init) to completion, returning its output in
// the error when it fails.
func runOnce(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = childEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("run %s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// startProc starts a long-running child writing its output to logPath.
func startProc(name, logPath, dir string, argv ...string) (*proc, error) {
	return startProcEnv(name, logPath, dir, nil, argv...)
}

// startProcEnv is startProc with env added to the child's environment.
func startProcEnv(name, logPath, dir string, env []string, argv ...string) (*proc, error) {
	// O_APPEND: the child may open the same file for its own log.
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer f.Close() // the child has its own descriptor
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(childEnv(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	// Pdeathsig kills the child if the bench dies without cleaning up (kill -9).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// stop sends SIGTERM to the process group, waits up to stopGrace, then kills the group.
// It returns once the process has been reaped. Safe to call more than once.
func (p *proc) stop() {
	pgid := p.cmd.Process.Pid
	select {
	case <-p.done:
	default:
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(stopGrace):
		}
	}
	// Whatever is left of the group (the leader ignoring SIGTERM, or helpers it
	// forked) is killed; ESRCH when nothing is left is expected.
	syscall.Kill(-pgid, syscall.SIGKILL)
	<-p.done
}

// exited reports whether the process has ended (on its own or by stop).
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tail returns the last lines of the process's log, for error messages.
func (p *proc) tail() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-8):], "\n")
}

// waitTLS polls until addr completes a TLS handshake with cfg, the process exits,
// startTimeout passes or ctx ends.
func (p *proc) waitTLS(ctx context.Context, addr string, cfg *tls.Config) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		c, err := dial(ctx, addr, cfg)
		if err == nil {
			return c.Close()
		}
		last = err
		select {
		case <-p.done:
			return fmt.Errorf("wait for %s on %s: exited (%v); log %s:\n%s", p.name, addr, p.err, p.log, p.tail())
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("wait for %s on %s: no TLS after %s (last: %v); log %s:\n%s", p.name, addr, startTimeout, last, p.log, p.tail())
			}
			return fmt.Errorf("wait for %s on %s: %w", p.name, addr, ctx.Err())
		case <-tick.C:
		}
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
