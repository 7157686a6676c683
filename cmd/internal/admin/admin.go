package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"
)

// checkTimeout bounds each readiness check, so a stuck token cannot hang a probe.
const checkTimeout = 2 * time.Second

// Check is one part of readiness.
type Check struct {
	Name string // what an operator reads in /readyz: "token", "store", "kmip"
	Run  func(ctx context.Context) error
}

// Handler serves /metrics from m, /healthz (200 while the process serves HTTP) and
// /readyz: 200 when every check passes, else 503 with one line per part, naming
// each failing one and why.
func Handler(m *Metrics, checks []Check) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		var b strings.Builder
		ready := true
		for _, c := range checks {
			ctx, cancel := context.WithTimeout(r.Context(), checkTimeout)
			err := c.Run(ctx)
			cancel()
			if err != nil {
				ready = false
				fmt.Fprintf(&b, "%s: not ready: %v\n", c.Name, err)
			} else {
				fmt.Fprintf(&b, "%s: ok\n", c.Name)
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprint(w, b.String())
	})
	return mux
}

// Server is a running admin listener.
type Server struct {
	http *http.Server
	ln   net.Listener
	done chan struct{}
}

// Start listens on addr and serves h until Shutdown. Errors while serving are logged.
func Start(addr string, h http.Handler, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen admin on %s: %w", addr, err)
	}
	s := &Server{
		http: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 5 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       time.Minute,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin listener failed", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return s, nil
}

// Addr is the address the listener is bound to.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Shutdown stops the listener and waits for requests in flight, up to ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	<-s.done
	if err != nil {
		return fmt.Errorf("shut down admin listener: %w", err)
	}
	return nil
}
