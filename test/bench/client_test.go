package bench

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gemalto/kmip-go/kmip14"
	"github.com/gemalto/kmip-go/ttlv"

	"github.com/hsmkms/hsmkms/kmip/msg"
)

// TestRequests checks every request the bench sends is a well-formed one-item KMIP
// 1.2 request carrying what the operation needs.
func TestRequests(t *testing.T) {
	tests := []struct {
		name string
		req  []byte
		op   kmip14.Operation
		want []ttlv.Tag // payload children, in order
	}{
		{"create", createAES256(), kmip14.OperationCreate, []ttlv.Tag{kmip14.TagObjectType, kmip14.TagTemplateAttribute}},
		{"activate", activate("k1"), kmip14.OperationActivate, []ttlv.Tag{kmip14.TagUniqueIdentifier}},
		{"get", get("k1"), kmip14.OperationGet, []ttlv.Tag{kmip14.TagUniqueIdentifier}},
		{"get attributes", getState("k1"), kmip14.OperationGetAttributes, []ttlv.Tag{kmip14.TagUniqueIdentifier, kmip14.TagAttributeName}},
		{"encrypt", encrypt64("k1"), kmip14.OperationEncrypt, []ttlv.Tag{kmip14.TagUniqueIdentifier, kmip14.TagCryptographicParameters, kmip14.TagData}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, err := msg.Decode(tt.req)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			req, err := msg.ParseRequest(root)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if req.Header.Version != protocol || len(req.Items) != 1 || req.Items[0].Operation != uint32(tt.op) {
				t.Fatalf("got version %v, %d items, want %v and one %v", req.Header.Version, len(req.Items), protocol, tt.op)
			}
			var got []ttlv.Tag
			for _, c := range req.Items[0].Payload.Children {
				got = append(got, c.Tag)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("payload tags %v, want %v", got, tt.want)
			}
		})
	}
	enc, _ := msg.Decode(encrypt64("k1"))
	if d := enc.Child(kmip14.TagBatchItem).Child(kmip14.TagRequestPayload).Child(kmip14.TagData); len(d.Bytes) != 64 {
		t.Errorf("Encrypt sends %d bytes, want 64", len(d.Bytes))
	}
}

func reply(item msg.ResponseItem) *msg.Node {
	r := &msg.Response{Version: protocol, TimeStamp: time.Unix(0, 0), Items: []msg.ResponseItem{item}}
	root, err := msg.Decode(r.Node().Append(nil))
	if err != nil {
		panic(err)
	}
	return root
}

func TestReplyPayload(t *testing.T) {
	ok := msg.Struct(kmip14.TagResponsePayload, msg.Text(kmip14.TagUniqueIdentifier, "k1"))
	tests := []struct {
		name    string
		root    *msg.Node
		wantErr string // "" for success
	}{
		{"success", reply(msg.ResponseItem{Operation: uint32(kmip14.OperationGet), Status: kmip14.ResultStatusSuccess, Payload: ok}), ""},
		{"failure names reason and message", reply(msg.ResponseItem{Operation: uint32(kmip14.OperationGet), Status: kmip14.ResultStatusOperationFailed,
			Reason: kmip14.ResultReasonItemNotFound, Message: "no such key"}), `Get: OperationFailed: ItemNotFound: "no such key"`},
		{"other operation", reply(msg.ResponseItem{Operation: uint32(kmip14.OperationLocate), Status: kmip14.ResultStatusSuccess, Payload: ok}), "operation missing or different"},
		{"no payload", reply(msg.ResponseItem{Operation: uint32(kmip14.OperationGet), Status: kmip14.ResultStatusSuccess}), "no Response Payload"},
		{"not a response", msg.Struct(kmip14.TagRequestMessage), "want a Response Message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := replyPayload(kmip14.OperationGet, tt.root)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tt.wantErr == "" && p.Child(kmip14.TagUniqueIdentifier).Text() != "k1":
				t.Fatalf("payload not returned: %v", p)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestReplyChecks(t *testing.T) {
	attr := func(name string, v *msg.Node) *msg.Node {
		return msg.Struct(kmip14.TagAttribute, msg.Text(kmip14.TagAttributeName, name), v)
	}
	p := func(children ...*msg.Node) *msg.Node { return msg.Struct(kmip14.TagResponsePayload, children...) }
	key := msg.Struct(kmip14.TagSymmetricKey, msg.Struct(kmip14.TagKeyBlock,
		msg.Struct(kmip14.TagKeyValue, msg.Bytes(kmip14.TagKeyMaterial, make([]byte, 32)))))
	tests := []struct {
		name  string
		check func(*msg.Node) error
		in    *msg.Node
		ok    bool
	}{
		{"get with key value", checkGot, p(key), true},
		{"get without key", checkGot, p(msg.Text(kmip14.TagUniqueIdentifier, "k1")), false},
		{"state active", checkState, p(attr("State", msg.Enum(kmip14.TagAttributeValue, uint32(kmip14.StateActive)))), true},
		{"state pre-active", checkState, p(attr("State", msg.Enum(kmip14.TagAttributeValue, uint32(kmip14.StatePreActive)))), false},
		{"state missing", checkState, p(), false},
		{"ciphertext 80 bytes", checkEncrypted, p(msg.Bytes(kmip14.TagData, make([]byte, 80))), true},
		{"ciphertext unpadded", checkEncrypted, p(msg.Bytes(kmip14.TagData, make([]byte, 64))), false},
		{"created", func(n *msg.Node) error { _, err := checkCreated(n); return err }, p(msg.Text(kmip14.TagUniqueIdentifier, "k1")), true},
		{"created without id", func(n *msg.Node) error { _, err := checkCreated(n); return err }, p(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.check(tt.in); (err == nil) != tt.ok {
				t.Errorf("check = %v, want ok %v", err, tt.ok)
			}
		})
	}
}
