package kmip

import (
	"context"
	"fmt"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/meta"
)

// AuditSink stores the records of the Audit middleware. meta.AuditLog
// implements it.
type AuditSink interface {
	// Append stores rec durably before it returns.
	Append(ctx context.Context, rec meta.AuditRecord) error
	// Enqueue queues rec for a batched commit; it may block briefly when the
	// queue is full.
	Enqueue(ctx context.Context, rec meta.AuditRecord) error
}

// readOnly lists the operations whose records are batched: they change no
// state and reveal no key material, and some run thousands of times a second
// (Encrypt, Decrypt) or on every client's poll (Get Attributes: mongod polls
// each key's state every 900 s per node). Every other operation, including
// any added later, is recorded before its reply is sent.
var readOnly = map[uint32]bool{
	uint32(kmip14.OperationGetAttributes):    true,
	uint32(kmip14.OperationGetAttributeList): true,
	uint32(kmip14.OperationLocate):           true,
	uint32(kmip14.OperationQuery):            true,
	uint32(kmip14.OperationDiscoverVersions): true,
	uint32(kmip14.OperationEncrypt):          true,
	uint32(kmip14.OperationDecrypt):          true,
}

// noTarget lists operations that never act on the ID placeholder.
var noTarget = map[uint32]bool{
	uint32(kmip14.OperationCreate):           true,
	uint32(kmip14.OperationCreateKeyPair):    true,
	uint32(kmip14.OperationRegister):         true,
	uint32(kmip14.OperationLocate):           true,
	uint32(kmip14.OperationQuery):            true,
	uint32(kmip14.OperationDiscoverVersions): true,
}

// maxAuditIDs bounds the object IDs of one record (a Locate may return
// thousands); the rest are counted in a last "+N more" entry.
const maxAuditIDs = 64

// errAuditUnavailable is what a client sees when its record could not be
// stored: the server fails closed rather than act unrecorded.
var errAuditUnavailable = &Error{Reason: kmip14.ResultReasonGeneralFailure, Message: "audit trail unavailable"}

// Audit records every batch item it wraps: the peer's identity, certificate
// fingerprint and address, the protocol version, the operation, the objects
// it named or produced, and the result. The record is written once the
// result is known and before the reply goes out. Operations that change
// state or reveal key material, and every Permission Denied, are committed
// synchronously (Append); read-only operations are batched (Enqueue). If the
// record cannot be stored, a successful item fails with General Failure
// "audit trail unavailable" and its payload (a key, say) is withheld; the
// operation's own effect, committed by the handler in its own transaction,
// stays. A failed item keeps its own error. An item that
// failed keeps its own error.
func Audit(sink AuditSink) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, it *Item) (*msg.Node, error) {
			defer func() {
				if v := recover(); v != nil {
					// The batch executor recovers and logs the panic; record the
					// failed item first. A failure to record adds nothing to that.
					_ = sink.Append(ctx, auditRecord(ctx, it, nil, errPanicked))
					panic(v)
				}
			}()
			p, err := next.ServeItem(ctx, it)
			rec := auditRecord(ctx, it, p, err)
			write := sink.Append
			if !durable(it.Operation, err) {
				write = sink.Enqueue
			}
			if werr := write(ctx, rec); werr != nil {
				if err != nil {
					// The item failed and reveals nothing; its own cause (often the
					// one that also stopped the record: a full store, a missing
					// token) tells the client more. The sink logged the loss.
					return nil, err
				}
				return nil, fmt.Errorf("%w: record %s: %w", errAuditUnavailable, rec.Operation, werr)
			}
			return p, err
		})
	}
}

// errPanicked stands for a handler panic in the record.
var errPanicked = &Error{Reason: kmip14.ResultReasonGeneralFailure, Message: "internal error"}

// durable reports whether the record of op with result err must be committed
// before the reply: anything but a read-only operation, and every refusal.
func durable(op uint32, err error) bool {
	if !readOnly[op] {
		return true
	}
	if err == nil {
		return false
	}
	reason, _, _ := ReasonFor(err)
	return reason == kmip14.ResultReasonPermissionDenied
}

// auditRecord describes one served item.
func auditRecord(ctx context.Context, it *Item, p *msg.Node, err error) meta.AuditRecord {
	rec := meta.AuditRecord{
		Time:      time.Now(),
		Kind:      meta.AuditKMIP,
		Version:   it.Version.String(),
		Operation: kmip14.Operation(it.Operation).String(),
		Status:    kmip14.ResultStatusSuccess.String(),
	}
	if peer := PeerFrom(ctx); peer != nil {
		rec.Actor, rec.Fingerprint, rec.RemoteAddr = peer.Identity, peer.Fingerprint, peer.Addr
	}
	if err != nil {
		reason, message, _ := ReasonFor(err)
		rec.Status = kmip14.ResultStatusOperationFailed.String()
		rec.Reason, rec.Message = reason.String(), message
	}
	var ids []string
	add := func(id string) {
		for _, have := range ids {
			if have == id {
				return
			}
		}
		ids = append(ids, id)
	}
	var asked string
	if uid := it.Payload.Child(kmip14.TagUniqueIdentifier); uid != nil && uid.Type == msg.TypeTextString {
		asked = uid.Text()
	} else if !noTarget[it.Operation] {
		asked = it.Placeholder
	}
	if asked != "" {
		add(asked)
	}
	more := 0
	for _, uid := range p.All(kmip14.TagUniqueIdentifier) {
		if uid.Type != msg.TypeTextString {
			continue
		}
		if len(ids) == maxAuditIDs {
			more++
			continue
		}
		add(uid.Text())
	}
	if more > 0 {
		ids = append(ids, fmt.Sprintf("+%d more", more))
	}
	rec.ObjectIDs = ids
	return rec
}
