package kmip

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip/msg"
)

// The batch executor is the only code that knows Batch Count, the continuation option,
// Unique Batch Item IDs, message extensions and the ID placeholder.
//
// Batch Error Continuation Option Undo asks the server to undo the items before a
// failed one; no operation here has an undo (Query reports Batch Undo Capability
// false), so a batch of several items with Undo is refused whole, before anything
// runs, with Feature Not Supported. A single item has nothing to undo and runs. The
// Asynchronous Indicator is refused the same way (Asynchronous Capability false):
// every operation here completes within its request. Batch Order Option needs
// nothing: items always run in order. Attestation fields are not kept: the server
// does not ask for attestation, so it ignores what a client offers.

// negotiate returns the version a request of version v is answered in, and whether v is
// supported. An unsupported version is answered in the newest supported one, in which
// only Discover Versions succeeds, so that a client can find a version both speak.
func negotiate(v msg.Version) (msg.Version, bool) {
	if msg.IsSupported(v) {
		return v, true
	}
	return msg.Supported[0], false
}

// runBatch executes the items of req in order and builds the reply.
func (c *conn) runBatch(ctx context.Context, req *msg.Request, log *slog.Logger) *msg.Response {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hdr := &req.Header
	v, supported := negotiate(hdr.Version)
	log = log.With("kmip_version", v.String())
	resp := &msg.Response{Version: v, Items: make([]msg.ResponseItem, 0, len(req.Items))}
	if reason, message := refusal(hdr, len(req.Items)); reason != 0 {
		for _, ri := range req.Items {
			resp.Items = append(resp.Items, msg.ResponseItem{Operation: ri.Operation, ID: ri.ID,
				Status: kmip14.ResultStatusOperationFailed, Reason: reason, Message: message})
		}
		resp.TimeStamp = c.srv.now()
		fit(resp, int(hdr.MaxResponseSize))
		return resp
	}
	var placeholder string
	for i := range req.Items {
		ri := &req.Items[i]
		it := &Item{Version: v, Operation: ri.Operation, Payload: ri.Payload, Placeholder: placeholder, Header: hdr}
		out := c.runItem(ctx, it, ri, i, supported, log)
		resp.Items = append(resp.Items, out)
		if out.Status != kmip14.ResultStatusSuccess {
			if hdr.ErrorContinuation != uint32(kmip14.BatchErrorContinuationOptionContinue) {
				break
			}
			continue
		}
		if uid := out.Payload.Child(kmip14.TagUniqueIdentifier); uid != nil && uid.Type == msg.TypeTextString {
			placeholder = uid.Text()
		}
	}
	resp.TimeStamp = c.srv.now()
	fit(resp, int(hdr.MaxResponseSize))
	return resp
}

// refusal says why a whole message is refused before any item runs (reason 0: it is
// not).
func refusal(hdr *msg.RequestHeader, items int) (kmip14.ResultReason, string) {
	switch {
	case hdr.Async:
		return kmip14.ResultReasonFeatureNotSupported, "asynchronous operations are not supported; send the request with Asynchronous Indicator false"
	case hdr.ErrorContinuation == uint32(kmip14.BatchErrorContinuationOptionUndo) && items > 1:
		return kmip14.ResultReasonFeatureNotSupported, "Batch Error Continuation Option Undo is not supported; use Stop or Continue"
	}
	return 0, ""
}

// runItem executes one batch item and turns its outcome into a response item.
func (c *conn) runItem(ctx context.Context, it *Item, ri *msg.RequestItem, index int, supported bool, log *slog.Logger) msg.ResponseItem {
	start := time.Now()
	out := msg.ResponseItem{Operation: ri.Operation, ID: ri.ID, Status: kmip14.ResultStatusSuccess}
	payload, err := c.execute(ctx, it, ri, supported)
	op := kmip14.Operation(ri.Operation).String()
	if err != nil {
		out.Status = kmip14.ResultStatusOperationFailed
		out.Reason, out.Message = c.failure(err, op, index, log)
		if ke, ok := errors.AsType[*Error](err); ok && ke.Payload != nil {
			out.Payload = ke.Payload
		}
	} else {
		out.Payload = payload
	}
	log.Debug("batch item served", "op", op, "batch_item", index, "duration", time.Since(start), "err", err)
	return out
}

func (c *conn) execute(ctx context.Context, it *Item, ri *msg.RequestItem, supported bool) (*msg.Node, error) {
	if !supported && ri.Operation != uint32(kmip14.OperationDiscoverVersions) {
		return nil, Errorf(kmip14.ResultReasonInvalidMessage, "protocol version %v is not supported", it.Header.Version)
	}
	if ext := ri.Extension.Child(kmip14.TagCriticalityIndicator); ext != nil && ext.Type == msg.TypeBoolean && ext.Int == 1 {
		return nil, Errorf(kmip14.ResultReasonFeatureNotSupported, "critical message extension not supported")
	}
	p, err := serveItem(ctx, c.srv.Handler, it)
	if err != nil {
		return nil, err
	}
	if p != nil && (p.Tag != kmip14.TagResponsePayload || p.Type != msg.TypeStructure) {
		return nil, fmt.Errorf("kmip: handler for %v returned a %v %v instead of a Response Payload structure",
			kmip14.Operation(ri.Operation), p.Type, p.Tag)
	}
	return p, nil
}

// panicError carries a recovered handler panic and where it happened.
type panicError struct {
	value any
	stack []byte
}

func (e *panicError) Error() string { return fmt.Sprintf("kmip: handler panic: %v", e.value) }

// serveItem calls h, turning a panic into an error so that one bad item cannot take the
// connection or the process down.
func serveItem(ctx context.Context, h Handler, it *Item) (p *msg.Node, err error) {
	defer func() {
		if r := recover(); r != nil {
			p, err = nil, &panicError{value: r, stack: debug.Stack()}
		}
	}()
	return h.ServeItem(ctx, it)
}

// failure maps err to what the client sees. Errors ReasonFor does not know are logged
// whole under a fresh request ID that is the only thing the client learns, so an
// operator can find the cause without the client seeing internal details.
func (c *conn) failure(err error, op string, index int, log *slog.Logger) (kmip14.ResultReason, string) {
	reason, message, known := ReasonFor(err)
	if known {
		if reason == kmip14.ResultReasonGeneralFailure { // the token or the store is degraded
			log.Warn("batch item failed", "op", op, "batch_item", index, "err", err)
		}
		return reason, message
	}
	id := requestID()
	attrs := []any{"op", op, "batch_item", index, "request_id", id, "err", err}
	if pe, ok := errors.AsType[*panicError](err); ok {
		attrs = append(attrs, "stack", string(pe.stack))
	}
	log.Error("batch item failed", attrs...)
	return kmip14.ResultReasonGeneralFailure, fmt.Sprintf("internal error (request %s)", id)
}

func requestID() string {
	var b [6]byte
	rand.Read(b[:]) // never fails (crypto/rand since Go 1.24)
	return hex.EncodeToString(b[:])
}

// fit enforces the client's Maximum Response Size (CLIENTS.md W15): while the reply is
// too large, the largest payload is replaced by a Response Too Large failure. A reply
// that stays too large with no payload left is sent as is; nothing smaller can be said.
func fit(resp *msg.Response, limit int) {
	if limit <= 0 {
		return
	}
	size := resp.Node().Size()
	original := size
	for size > limit {
		largest, largestSize := -1, 0
		for i := range resp.Items {
			if p := resp.Items[i].Payload; p != nil && p.Size() > largestSize {
				largest, largestSize = i, p.Size()
			}
		}
		if largest < 0 {
			return
		}
		it := &resp.Items[largest]
		it.Status = kmip14.ResultStatusOperationFailed
		it.Reason = kmip14.ResultReasonResponseTooLarge
		it.Message = fmt.Sprintf("response of %d bytes exceeds Maximum Response Size %d", original, limit)
		it.Payload = nil
		size = resp.Node().Size()
	}
}
