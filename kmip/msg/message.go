package msg

import (
	"fmt"
	"time"

	"github.com/gemalto/kmip-go/kmip14"
	"github.com/gemalto/kmip-go/ttlv"
)

// Version is a KMIP protocol version.
type Version struct{ Major, Minor int32 }

func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// AtLeast reports whether v is the same as or newer than major.minor.
func (v Version) AtLeast(major, minor int32) bool {
	return v.Major > major || (v.Major == major && v.Minor >= minor)
}

// Supported lists the versions the server speaks, newest first, as Discover Versions
// reports them.
var Supported = []Version{{1, 4}, {1, 3}, {1, 2}, {1, 1}, {1, 0}}

// IsSupported reports whether v is one of Supported.
func IsSupported(v Version) bool {
	for _, s := range Supported {
		if s == v {
			return true
		}
	}
	return false
}

// RequestHeader is the part of a request header the server acts on. Fields a server
// must ignore (attestation, correlation values) are not kept.
type RequestHeader struct {
	Version         Version
	MaxResponseSize int32 // 0: no limit asked for
	Async           bool
	BatchOrder      bool // ordered execution asked for; the server always executes in order
	// ErrorContinuation is the Batch Error Continuation Option (1 Continue, 2 Stop,
	// 3 Undo); 0 when absent, which means Stop.
	ErrorContinuation uint32
	BatchCount        int32
	TimeStamp         time.Time // zero when absent; never checked for skew (CLIENTS.md W16)
}

// RequestItem is one batch item.
type RequestItem struct {
	Operation uint32
	ID        []byte // Unique Batch Item ID; nil when the request had none
	Payload   *Node  // Request Payload; may be nil
	Extension *Node  // Message Extension; nil when absent
}

// Request is a decoded request message.
type Request struct {
	Header RequestHeader
	Items  []RequestItem
}

// ProtocolError is a problem with the message as a whole. The server answers it with
// a single failed batch item (no operation) carrying Reason.
type ProtocolError struct {
	Reason  kmip14.ResultReason
	Message string
}

func (e *ProtocolError) Error() string { return "msg: " + e.Message }

func invalid(format string, args ...any) *ProtocolError {
	return &ProtocolError{Reason: kmip14.ResultReasonInvalidMessage, Message: fmt.Sprintf(format, args...)}
}

// ParseRequest interprets a decoded Request Message. When the header yields a version,
// the returned Request carries it even if an error is returned, so the reply can be
// encoded in the version the client used.
func ParseRequest(root *Node) (*Request, error) {
	req := &Request{Header: RequestHeader{Version: Version{1, 0}}}
	if root.Tag != kmip14.TagRequestMessage || root.Type != TypeStructure {
		return req, invalid("expected a Request Message, got %v", root.Tag)
	}
	hdr := root.Child(kmip14.TagRequestHeader)
	if hdr == nil || hdr.Type != TypeStructure {
		return req, invalid("request has no Request Header")
	}
	pv := hdr.Child(kmip14.TagProtocolVersion)
	major, minor := pv.Child(kmip14.TagProtocolVersionMajor), pv.Child(kmip14.TagProtocolVersionMinor)
	if pv == nil || major == nil || minor == nil || major.Type != TypeInteger || minor.Type != TypeInteger {
		return req, invalid("request header has no valid Protocol Version")
	}
	h := &req.Header
	h.Version = Version{int32(major.Int), int32(minor.Int)}
	for _, c := range hdr.Children {
		var err *ProtocolError
		switch c.Tag {
		case kmip14.TagMaximumResponseSize:
			err = expect(c, TypeInteger)
			if c.Int < 0 {
				err = invalid("negative Maximum Response Size")
			}
			h.MaxResponseSize = int32(c.Int)
		case kmip14.TagAsynchronousIndicator:
			err = expect(c, TypeBoolean)
			h.Async = c.Int == 1
		case kmip14.TagBatchOrderOption:
			err = expect(c, TypeBoolean)
			h.BatchOrder = c.Int == 1
		case kmip14.TagBatchErrorContinuationOption:
			err = expect(c, TypeEnumeration)
			if c.Int < 1 || c.Int > 3 {
				err = invalid("unknown Batch Error Continuation Option %d", c.Int)
			}
			h.ErrorContinuation = uint32(c.Int)
		case kmip14.TagBatchCount:
			err = expect(c, TypeInteger)
			h.BatchCount = int32(c.Int)
		case kmip14.TagTimeStamp:
			err = expect(c, TypeDateTime)
			h.TimeStamp = c.Time()
		}
		if err != nil {
			return req, err
		}
	}
	items := root.All(kmip14.TagBatchItem)
	if hdr.Child(kmip14.TagBatchCount) == nil {
		return req, invalid("request header has no Batch Count")
	}
	if int(h.BatchCount) != len(items) || len(items) == 0 {
		return req, invalid("Batch Count %d but %d batch items", h.BatchCount, len(items))
	}
	for _, it := range items {
		if it.Type != TypeStructure {
			return req, invalid("batch item is not a structure")
		}
		var ri RequestItem
		op := it.Child(kmip14.TagOperation)
		if op == nil || op.Type != TypeEnumeration {
			return req, invalid("batch item has no Operation")
		}
		ri.Operation = uint32(op.Int)
		if id := it.Child(kmip14.TagUniqueBatchItemID); id != nil {
			if id.Type != TypeByteString {
				return req, invalid("Unique Batch Item ID must be a Byte String")
			}
			ri.ID = id.Bytes
		}
		if p := it.Child(kmip14.TagRequestPayload); p != nil {
			if p.Type != TypeStructure {
				return req, invalid("Request Payload must be a structure")
			}
			ri.Payload = p
		}
		ri.Extension = it.Child(kmip14.TagMessageExtension)
		req.Items = append(req.Items, ri)
	}
	return req, nil
}

func expect(n *Node, t ttlv.Type) *ProtocolError {
	if n.Type != t {
		return invalid("%v must be %v, got %v", n.Tag, t, n.Type)
	}
	return nil
}

// ResponseItem is one batch item of a reply.
type ResponseItem struct {
	Operation uint32 // 0: omitted (only for a message that could not be parsed)
	ID        []byte // echoed Unique Batch Item ID, nil when the request had none
	Status    kmip14.ResultStatus
	Reason    kmip14.ResultReason // failures only
	Message   string              // failures only
	Payload   *Node               // nil: no Response Payload
}

// Response is a reply message.
type Response struct {
	Version   Version
	TimeStamp time.Time
	Items     []ResponseItem
}

// Node encodes the reply. The header is exactly Protocol Version, Time Stamp and Batch
// Count (CLIENTS.md W2); each item is Operation, Unique Batch Item ID if the request had
// one, Result Status, then on failure Result Reason and Result Message, then the payload
// (W3).
func (r *Response) Node() *Node {
	root := Struct(kmip14.TagResponseMessage, Struct(kmip14.TagResponseHeader,
		Struct(kmip14.TagProtocolVersion,
			Int(kmip14.TagProtocolVersionMajor, r.Version.Major),
			Int(kmip14.TagProtocolVersionMinor, r.Version.Minor)),
		Date(kmip14.TagTimeStamp, r.TimeStamp),
		Int(kmip14.TagBatchCount, int32(len(r.Items))),
	))
	for i := range r.Items {
		root.Children = append(root.Children, r.Items[i].node())
	}
	return root
}

func (it *ResponseItem) node() *Node {
	n := Struct(kmip14.TagBatchItem)
	if it.Operation != 0 {
		n.Children = append(n.Children, Enum(kmip14.TagOperation, it.Operation))
	}
	if it.ID != nil {
		n.Children = append(n.Children, Bytes(kmip14.TagUniqueBatchItemID, it.ID))
	}
	n.Children = append(n.Children, Enum(kmip14.TagResultStatus, uint32(it.Status)))
	if it.Status != kmip14.ResultStatusSuccess {
		n.Children = append(n.Children,
			Enum(kmip14.TagResultReason, uint32(it.Reason)),
			Text(kmip14.TagResultMessage, it.Message))
	}
	if it.Payload != nil {
		n.Children = append(n.Children, it.Payload)
	}
	return n
}
