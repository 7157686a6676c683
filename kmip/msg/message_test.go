package msg_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip/msg"
)

func version(major, minor int32) *msg.Node {
	return msg.Struct(kmip14.TagProtocolVersion,
		msg.Int(kmip14.TagProtocolVersionMajor, major), msg.Int(kmip14.TagProtocolVersionMinor, minor))
}

func item(op kmip14.Operation, extra ...*msg.Node) *msg.Node {
	return msg.Struct(kmip14.TagBatchItem, append([]*msg.Node{msg.Enum(kmip14.TagOperation, uint32(op))}, extra...)...)
}

func request(header []*msg.Node, items ...*msg.Node) *msg.Node {
	return msg.Struct(kmip14.TagRequestMessage, append([]*msg.Node{msg.Struct(kmip14.TagRequestHeader, header...)}, items...)...)
}

// seedMessages are valid requests, shared with the fuzz target.
func seedMessages() [][]byte {
	uid := msg.Struct(kmip14.TagRequestPayload, msg.Text(kmip14.TagUniqueIdentifier, "1"))
	return [][]byte{
		request([]*msg.Node{version(1, 0), msg.Int(kmip14.TagBatchCount, 1)}, item(kmip14.OperationGet, uid)).Append(nil),
		request([]*msg.Node{version(1, 2), msg.Int(kmip14.TagMaximumResponseSize, 8192),
			msg.Date(kmip14.TagTimeStamp, time.Unix(1e9, 0)), msg.Int(kmip14.TagBatchCount, 2)},
			item(kmip14.OperationCreate, msg.Bytes(kmip14.TagUniqueBatchItemID, []byte{1})),
			item(kmip14.OperationActivate, msg.Bytes(kmip14.TagUniqueBatchItemID, []byte{2}))).Append(nil),
		request([]*msg.Node{version(1, 4), msg.Enum(kmip14.TagBatchErrorContinuationOption, 1), msg.Int(kmip14.TagBatchCount, 1)},
			item(kmip14.OperationDiscoverVersions, msg.Struct(kmip14.TagRequestPayload),
				msg.Struct(kmip14.TagMessageExtension, msg.Text(kmip14.TagVendorIdentification, "x"),
					msg.Bool(kmip14.TagCriticalityIndicator, false)))).Append(nil),
	}
}

func TestParseRequest(t *testing.T) {
	t.Parallel()
	ts := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	payload := msg.Struct(kmip14.TagRequestPayload, msg.Text(kmip14.TagUniqueIdentifier, "k"))
	ext := msg.Struct(kmip14.TagMessageExtension, msg.Bool(kmip14.TagCriticalityIndicator, true))
	tests := []struct {
		name    string
		in      *msg.Node
		want    *msg.Request
		wantErr string // substring of the ProtocolError message
		wantV   msg.Version
	}{
		{
			name: "full header, two items",
			in: request([]*msg.Node{version(1, 2), msg.Int(kmip14.TagMaximumResponseSize, 8192),
				msg.Bool(kmip14.TagAsynchronousIndicator, true), msg.Bool(kmip14.TagBatchOrderOption, true),
				msg.Enum(kmip14.TagBatchErrorContinuationOption, 1), msg.Date(kmip14.TagTimeStamp, ts),
				msg.Int(kmip14.TagBatchCount, 2)},
				item(kmip14.OperationGet, msg.Bytes(kmip14.TagUniqueBatchItemID, []byte("a")), payload, ext),
				item(kmip14.OperationActivate)),
			want: &msg.Request{
				Header: msg.RequestHeader{Version: msg.Version{Major: 1, Minor: 2}, MaxResponseSize: 8192, Async: true,
					BatchOrder: true, ErrorContinuation: 1, BatchCount: 2, TimeStamp: ts},
				Items: []msg.RequestItem{
					{Operation: uint32(kmip14.OperationGet), ID: []byte("a"), Payload: payload, Extension: ext},
					{Operation: uint32(kmip14.OperationActivate)},
				},
			},
			wantV: msg.Version{Major: 1, Minor: 2},
		},
		{name: "not a request", in: msg.Struct(kmip14.TagResponseMessage), wantErr: "expected a Request Message", wantV: msg.Version{Major: 1}},
		{name: "no header", in: msg.Struct(kmip14.TagRequestMessage, item(kmip14.OperationGet)), wantErr: "no Request Header", wantV: msg.Version{Major: 1}},
		{name: "no version", in: request([]*msg.Node{msg.Int(kmip14.TagBatchCount, 1)}, item(kmip14.OperationGet)),
			wantErr: "no valid Protocol Version", wantV: msg.Version{Major: 1}},
		{name: "no batch count", in: request([]*msg.Node{version(1, 4)}, item(kmip14.OperationGet)),
			wantErr: "no Batch Count", wantV: msg.Version{Major: 1, Minor: 4}},
		{name: "batch count mismatch", in: request([]*msg.Node{version(1, 3), msg.Int(kmip14.TagBatchCount, 2)}, item(kmip14.OperationGet)),
			wantErr: "Batch Count 2 but 1 batch items", wantV: msg.Version{Major: 1, Minor: 3}},
		{name: "zero items", in: request([]*msg.Node{version(1, 1), msg.Int(kmip14.TagBatchCount, 0)}),
			wantErr: "Batch Count 0 but 0", wantV: msg.Version{Major: 1, Minor: 1}},
		{name: "batch count wrong type", in: request([]*msg.Node{version(1, 0), msg.Long(kmip14.TagBatchCount, 1)}, item(kmip14.OperationGet)),
			wantErr: "must be", wantV: msg.Version{Major: 1}},
		{name: "negative max response size", in: request([]*msg.Node{version(1, 0), msg.Int(kmip14.TagMaximumResponseSize, -1), msg.Int(kmip14.TagBatchCount, 1)}, item(kmip14.OperationGet)),
			wantErr: "negative Maximum Response Size", wantV: msg.Version{Major: 1}},
		{name: "bad continuation", in: request([]*msg.Node{version(1, 0), msg.Enum(kmip14.TagBatchErrorContinuationOption, 4), msg.Int(kmip14.TagBatchCount, 1)}, item(kmip14.OperationGet)),
			wantErr: "Continuation Option 4", wantV: msg.Version{Major: 1}},
		{name: "item without operation", in: request([]*msg.Node{version(1, 0), msg.Int(kmip14.TagBatchCount, 1)}, msg.Struct(kmip14.TagBatchItem)),
			wantErr: "no Operation", wantV: msg.Version{Major: 1}},
		{name: "text batch item id", in: request([]*msg.Node{version(1, 0), msg.Int(kmip14.TagBatchCount, 1)},
			item(kmip14.OperationGet, msg.Text(kmip14.TagUniqueBatchItemID, "1"))),
			wantErr: "Byte String", wantV: msg.Version{Major: 1}},
		{name: "payload not a structure", in: request([]*msg.Node{version(1, 0), msg.Int(kmip14.TagBatchCount, 1)},
			item(kmip14.OperationGet, msg.Text(kmip14.TagRequestPayload, "1"))),
			wantErr: "Request Payload must be a structure", wantV: msg.Version{Major: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := msg.ParseRequest(tt.in)
			if got == nil || got.Header.Version != tt.wantV {
				t.Fatalf("request = %+v, want version %v", got, tt.wantV)
			}
			if tt.wantErr != "" {
				var pe *msg.ProtocolError
				if !errors.As(err, &pe) || pe.Reason != kmip14.ResultReasonInvalidMessage || !strings.Contains(pe.Message, tt.wantErr) {
					t.Fatalf("err = %v, want Invalid Message containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Header != tt.want.Header {
				t.Fatalf("header = %+v\nwant     %+v", got.Header, tt.want.Header)
			}
			if len(got.Items) != len(tt.want.Items) {
				t.Fatalf("%d items, want %d", len(got.Items), len(tt.want.Items))
			}
			for i, w := range tt.want.Items {
				g := got.Items[i]
				if g.Operation != w.Operation || !bytes.Equal(g.ID, w.ID) || (g.ID == nil) != (w.ID == nil) ||
					!g.Payload.Equal(w.Payload) || !g.Extension.Equal(w.Extension) {
					t.Fatalf("item %d = %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

// TestResponseEncoding pins the byte layout clients parse forward-only (CLIENTS.md W2, W3).
func TestResponseEncoding(t *testing.T) {
	t.Parallel()
	ts := time.Unix(0x60000000, 0)
	tests := []struct {
		name string
		resp msg.Response
		hex  string
	}{
		{
			name: "success with id and payload",
			resp: msg.Response{Version: msg.Version{Major: 1, Minor: 0}, TimeStamp: ts, Items: []msg.ResponseItem{{
				Operation: uint32(kmip14.OperationActivate), ID: []byte{0xAB}, Status: kmip14.ResultStatusSuccess,
				Payload: msg.Struct(kmip14.TagResponsePayload, msg.Text(kmip14.TagUniqueIdentifier, "1")),
			}}},
			hex: `42007b|01|000000a0
				42007a|01|00000048
					420069|01|00000020|42006a|02|00000004|0000000100000000|42006b|02|00000004|0000000000000000
					420092|09|00000008|0000000060000000
					42000d|02|00000004|0000000100000000
				42000f|01|00000048
					42005c|05|00000004|0000001200000000
					420093|08|00000001|ab00000000000000
					42007f|05|00000004|0000000000000000
					42007c|01|00000010|420094|07|00000001|3100000000000000`,
		},
		{
			name: "failure without operation or id",
			resp: msg.Response{Version: msg.Version{Major: 1, Minor: 4}, TimeStamp: ts, Items: []msg.ResponseItem{{
				Status: kmip14.ResultStatusOperationFailed, Reason: kmip14.ResultReasonInvalidMessage, Message: "bad",
			}}},
			hex: `42007b|01|00000088
				42007a|01|00000048
					420069|01|00000020|42006a|02|00000004|0000000100000000|42006b|02|00000004|0000000400000000
					420092|09|00000008|0000000060000000
					42000d|02|00000004|0000000100000000
				42000f|01|00000030
					42007f|05|00000004|0000000100000000
					42007e|05|00000004|0000000400000000
					42007d|07|00000003|6261640000000000`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := tt.resp.Node().Append(nil)
			if want := unhex(t, tt.hex); !bytes.Equal(got, want) {
				t.Fatalf("encoded\n%x\nwant\n%x", got, want)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		v         msg.Version
		supported bool
		atLeast12 bool
	}{
		{msg.Version{Major: 1, Minor: 0}, true, false},
		{msg.Version{Major: 1, Minor: 2}, true, true},
		{msg.Version{Major: 1, Minor: 4}, true, true},
		{msg.Version{Major: 1, Minor: 5}, false, true},
		{msg.Version{Major: 2, Minor: 0}, false, true},
		{msg.Version{Major: 0, Minor: 9}, false, false},
	}
	for _, tt := range tests {
		if msg.IsSupported(tt.v) != tt.supported || tt.v.AtLeast(1, 2) != tt.atLeast12 {
			t.Errorf("%v: IsSupported %v, AtLeast(1.2) %v", tt.v, msg.IsSupported(tt.v), tt.v.AtLeast(1, 2))
		}
	}
}
