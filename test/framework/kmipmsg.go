package framework

import (
	"fmt"
	"time"

	"github.com/gemalto/kmip-go/kmip14"
	"github.com/gemalto/kmip-go/ttlv"

	"github.com/hsmkms/hsmkms/kmip/msg"
)

// Header is what a test puts in a request header. Zero fields are omitted, so a header
// can be as bare as PyKMIP's or as full as Percona's.
type Header struct {
	Version         msg.Version
	MaxResponseSize int32
	TimeStamp       time.Time
}

// Request builds a Request Message: Protocol Version, [Maximum Response Size],
// [Time Stamp], Batch Count (the number of items), then the items.
func Request(h Header, items ...*msg.Node) *msg.Node {
	hdr := msg.Struct(kmip14.TagRequestHeader, msg.Struct(kmip14.TagProtocolVersion,
		msg.Int(kmip14.TagProtocolVersionMajor, h.Version.Major),
		msg.Int(kmip14.TagProtocolVersionMinor, h.Version.Minor)))
	if h.MaxResponseSize != 0 {
		hdr.Children = append(hdr.Children, msg.Int(kmip14.TagMaximumResponseSize, h.MaxResponseSize))
	}
	if !h.TimeStamp.IsZero() {
		hdr.Children = append(hdr.Children, msg.Date(kmip14.TagTimeStamp, h.TimeStamp))
	}
	hdr.Children = append(hdr.Children, msg.Int(kmip14.TagBatchCount, int32(len(items))))
	return msg.Struct(kmip14.TagRequestMessage, append([]*msg.Node{hdr}, items...)...)
}

// Item builds a batch item; a nil id omits the Unique Batch Item ID.
func Item(op kmip14.Operation, id []byte, payload ...*msg.Node) *msg.Node {
	it := msg.Struct(kmip14.TagBatchItem, msg.Enum(kmip14.TagOperation, uint32(op)))
	if id != nil {
		it.Children = append(it.Children, msg.Bytes(kmip14.TagUniqueBatchItemID, id))
	}
	it.Children = append(it.Children, msg.Struct(kmip14.TagRequestPayload, payload...))
	return it
}

// Attr builds an Attribute; v's tag is replaced by Attribute Value.
func Attr(name string, v *msg.Node) *msg.Node {
	v.Tag = kmip14.TagAttributeValue
	return msg.Struct(kmip14.TagAttribute, msg.Text(kmip14.TagAttributeName, name), v)
}

// Template builds a Template-Attribute structure.
func Template(attrs ...*msg.Node) *msg.Node { return msg.Struct(kmip14.TagTemplateAttribute, attrs...) }

// UID builds a Unique Identifier.
func UID(id string) *msg.Node { return msg.Text(kmip14.TagUniqueIdentifier, id) }

// Reply is a decoded Response Message with the checks every client relies on.
type Reply struct{ Root *msg.Node }

// Items returns the batch items.
func (r Reply) Items() []*msg.Node { return r.Root.All(kmip14.TagBatchItem) }

// Payload returns the Response Payload of item i (nil when absent).
func (r Reply) Payload(i int) *msg.Node {
	items := r.Items()
	if i >= len(items) {
		return nil
	}
	return items[i].Child(kmip14.TagResponsePayload)
}

// Status returns the Result Status and, on failure, the Result Reason of item i.
func (r Reply) Status(i int) (kmip14.ResultStatus, kmip14.ResultReason) {
	items := r.Items()
	if i >= len(items) {
		return 0xffffffff, 0
	}
	var reason kmip14.ResultReason
	if n := items[i].Child(kmip14.TagResultReason); n != nil {
		reason = kmip14.ResultReason(n.Int)
	}
	st := items[i].Child(kmip14.TagResultStatus)
	if st == nil {
		return 0xffffffff, reason
	}
	return kmip14.ResultStatus(st.Int), reason
}

// CheckHeader verifies CLIENTS.md W2: the reply header is exactly Protocol Version (the
// one asked for), Time Stamp (within a minute of now) and Batch Count (= the items).
func (r Reply) CheckHeader(want msg.Version) error {
	if r.Root.Tag != kmip14.TagResponseMessage || r.Root.Type != msg.TypeStructure {
		return fmt.Errorf("root is %v, want ResponseMessage", r.Root.Tag)
	}
	if len(r.Root.Children) == 0 || r.Root.Children[0].Tag != kmip14.TagResponseHeader {
		return fmt.Errorf("first child is not a ResponseHeader")
	}
	h := r.Root.Children[0]
	if got := Tags(h); len(got) != 3 || got[0] != kmip14.TagProtocolVersion || got[1] != kmip14.TagTimeStamp || got[2] != kmip14.TagBatchCount {
		return fmt.Errorf("header fields %v, want [ProtocolVersion TimeStamp BatchCount]", got)
	}
	pv := h.Children[0]
	if got := Tags(pv); len(got) != 2 || got[0] != kmip14.TagProtocolVersionMajor || got[1] != kmip14.TagProtocolVersionMinor {
		return fmt.Errorf("protocol version fields %v", got)
	}
	if got := (msg.Version{Major: int32(pv.Children[0].Int), Minor: int32(pv.Children[1].Int)}); got != want {
		return fmt.Errorf("reply version %v, want %v", got, want)
	}
	if ts := h.Children[1]; ts.Type != msg.TypeDateTime || time.Since(ts.Time()).Abs() > time.Minute {
		return fmt.Errorf("time stamp %v (type %v) not near now", ts.Time(), ts.Type)
	}
	if bc := h.Children[2]; bc.Type != msg.TypeInteger || int(bc.Int) != len(r.Items()) {
		return fmt.Errorf("batch count %d but %d items", bc.Int, len(r.Items()))
	}
	for _, c := range r.Root.Children[1:] {
		if c.Tag != kmip14.TagBatchItem {
			return fmt.Errorf("unexpected %v in the message", c.Tag)
		}
	}
	return nil
}

// CheckItem verifies CLIENTS.md W3 for item i: Operation (= op), Unique Batch Item ID
// only if id is non-nil (and equal to it), Result Status, Result Reason and Result
// Message exactly when it failed, then at most a Response Payload.
func (r Reply) CheckItem(i int, op kmip14.Operation, id []byte) error {
	items := r.Items()
	if i >= len(items) {
		return fmt.Errorf("reply has %d items, want item %d", len(items), i)
	}
	want := []ttlv.Tag{kmip14.TagOperation}
	if id != nil {
		want = append(want, kmip14.TagUniqueBatchItemID)
	}
	want = append(want, kmip14.TagResultStatus)
	it := items[i]
	if st := it.Child(kmip14.TagResultStatus); st != nil && st.Int != int64(kmip14.ResultStatusSuccess) {
		want = append(want, kmip14.TagResultReason, kmip14.TagResultMessage)
	}
	got := Tags(it)
	if n := len(got); n == len(want)+1 && got[n-1] == kmip14.TagResponsePayload {
		got = got[:n-1]
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		return fmt.Errorf("batch item fields %v, want %v [ResponsePayload]", Tags(it), want)
	}
	if o := it.Children[0]; o.Type != msg.TypeEnumeration || o.Int != int64(op) {
		return fmt.Errorf("operation %v, want %v", kmip14.Operation(o.Int), op)
	}
	if id != nil && string(it.Children[1].Bytes) != string(id) {
		return fmt.Errorf("batch item id %x, want %x", it.Children[1].Bytes, id)
	}
	return nil
}

// Tags lists the tags of n's children in order.
func Tags(n *msg.Node) []ttlv.Tag {
	out := make([]ttlv.Tag, len(n.Children))
	for i, c := range n.Children {
		out[i] = c.Tag
	}
	return out
}

// Walk calls fn for n and every node below it.
func Walk(n *msg.Node, fn func(*msg.Node)) {
	fn(n)
	for _, c := range n.Children {
		Walk(c, fn)
	}
}
