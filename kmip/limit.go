package kmip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip/msg"
)

// defaultMaxRequestsPerClient bounds the messages one identity has in flight across
// all its connections. A connection runs one message at a time, so this is also the
// number of its connections that can be busy at once; mongod uses one or two.
const defaultMaxRequestsPerClient = 64

// errIdle marks the end of a connection that stayed idle past IdleTimeout.
var errIdle = errors.New("kmip: idle timeout")

// clientLimiter counts the messages in flight per client identity.
type clientLimiter struct {
	mu sync.Mutex
	n  map[string]int
}

// acquire takes a slot for id unless id already has max in flight.
func (l *clientLimiter) acquire(id string, max int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n == nil {
		l.n = map[string]int{}
	}
	if l.n[id] >= max {
		return false
	}
	l.n[id]++
	return true
}

// release gives back a slot acquire took.
func (l *clientLimiter) release(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[id]--; l.n[id] <= 0 {
		delete(l.n, id)
	}
}

// admitRequest takes a request slot for the peer of ctx and returns the function that
// gives it back, or nil when the client is over its limit; the refusal is then logged
// and reported once.
func (c *conn) admitRequest(ctx context.Context, log *slog.Logger) func() {
	s := c.srv
	id := identityOf(ctx)
	limit := orDefault(s.MaxRequestsPerClient, defaultMaxRequestsPerClient)
	if !s.clients.acquire(id, limit) {
		log.Warn("request refused: limit reached", "limit", LimitClientRequests, "max_requests_per_client", limit)
		s.observer().OnLimit(LimitClientRequests)
		return nil
	}
	return func() { s.clients.release(id) }
}

// refuseBatch answers every item of req with General Failure: KMIP 1.x has no "busy"
// result reason, and the message tells the client to retry with fewer requests.
func (c *conn) refuseBatch(ctx context.Context, req *msg.Request) *msg.Response {
	v, _ := negotiate(req.Header.Version)
	message := fmt.Sprintf("too many concurrent requests from %s", identityOf(ctx))
	resp := &msg.Response{Version: v, TimeStamp: c.srv.now(), Items: make([]msg.ResponseItem, 0, len(req.Items))}
	for _, ri := range req.Items {
		resp.Items = append(resp.Items, msg.ResponseItem{
			Operation: ri.Operation, ID: ri.ID,
			Status: kmip14.ResultStatusOperationFailed, Reason: kmip14.ResultReasonGeneralFailure, Message: message,
		})
	}
	return resp
}

// logEnd writes the one line that says why a served connection ended, and reports a
// timeout as a limit hit. A stall inside a message is a Warn (a client or the network
// misbehaved); idling out is routine, so Debug.
func (c *conn) logEnd(err error, log *slog.Logger) {
	s := c.srv
	switch {
	case errors.Is(err, errIdle):
		log.Debug("connection closed: idle timeout", "limit", LimitIdleTimeout,
			"idle_timeout", orDefault(s.IdleTimeout, defaultIdleTimeout).String())
		s.observer().OnLimit(LimitIdleTimeout)
	case isTimeout(err):
		log.Warn("connection closed: read timeout", "limit", LimitReadTimeout,
			"read_timeout", orDefault(s.ReadTimeout, defaultReadTimeout).String(), "err", err)
		s.observer().OnLimit(LimitReadTimeout)
	default:
		// Clients often drop connections without close_notify (W13): that is the normal end.
		log.Debug("connection closed", "err", err)
	}
}

// identityOf is the client identity of ctx's connection; "" when ctx carries no peer
// (a handler driven without a connection, as the fuzz target does).
func identityOf(ctx context.Context) string {
	if p := PeerFrom(ctx); p != nil {
		return p.Identity
	}
	return ""
}
