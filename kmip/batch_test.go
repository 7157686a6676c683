package kmip_test

import (
	"bytes"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/gemalto/kmip-go/kmip14"
	"github.com/gemalto/kmip-go/ttlv"

	"github.com/hsmkms/hsmkms/kmip/kmiptest"
	"github.com/hsmkms/hsmkms/kmip/msg"
)

// TestReplyLayout pins the exact reply a forward-only parser reads (CLIENTS.md W1-W3):
// the request's version, header ProtocolVersion/TimeStamp/BatchCount, and items
// Operation, [UniqueBatchItemID], ResultStatus, [ResultReason, ResultMessage], payload.
func TestReplyLayout(t *testing.T) {
	t.Parallel()
	srv := kmiptest.NewServer(t, newScript(), withClock)
	cl := srv.Dial(t, "alice")
	header := func(v msg.Version, count int32) *msg.Node {
		return msg.Struct(kmip14.TagResponseHeader,
			msg.Struct(kmip14.TagProtocolVersion, msg.Int(kmip14.TagProtocolVersionMajor, v.Major), msg.Int(kmip14.TagProtocolVersionMinor, v.Minor)),
			msg.Date(kmip14.TagTimeStamp, fixedNow),
			msg.Int(kmip14.TagBatchCount, count))
	}
	id := []byte{0x00, 0xFF, 0x10} // echoed byte for byte, a leading zero included
	tests := []struct {
		name string
		req  *msg.Node
		want *msg.Node
	}{
		{
			name: "1.0 with batch item id",
			req:  request(v10, nil, item(kmip14.OperationGet, msg.Bytes(kmip14.TagUniqueBatchItemID, id), reqPayload(msg.Text(kmip14.TagUniqueIdentifier, "k1")))),
			want: msg.Struct(kmip14.TagResponseMessage, header(v10, 1), msg.Struct(kmip14.TagBatchItem,
				msg.Enum(kmip14.TagOperation, uint32(kmip14.OperationGet)),
				msg.Bytes(kmip14.TagUniqueBatchItemID, id),
				msg.Enum(kmip14.TagResultStatus, uint32(kmip14.ResultStatusSuccess)),
				payload(msg.Text(kmip14.TagUniqueIdentifier, "k1")))),
		},
		{
			name: "1.2 without batch item id",
			req: request(v12, []*msg.Node{msg.Int(kmip14.TagMaximumResponseSize, 8192), msg.Date(kmip14.TagTimeStamp, fixedNow.AddDate(-3, 0, 0))},
				item(kmip14.OperationGet, reqPayload(msg.Text(kmip14.TagUniqueIdentifier, "k1")))),
			want: msg.Struct(kmip14.TagResponseMessage, header(v12, 1), msg.Struct(kmip14.TagBatchItem,
				msg.Enum(kmip14.TagOperation, uint32(kmip14.OperationGet)),
				msg.Enum(kmip14.TagResultStatus, uint32(kmip14.ResultStatusSuccess)),
				payload(msg.Text(kmip14.TagUniqueIdentifier, "k1")))),
		},
		{
			name: "1.4 failure",
			req:  request(v14, nil, item(kmip14.OperationActivate, msg.Bytes(kmip14.TagUniqueBatchItemID, id))),
			want: msg.Struct(kmip14.TagResponseMessage, header(v14, 1), msg.Struct(kmip14.TagBatchItem,
				msg.Enum(kmip14.TagOperation, uint32(kmip14.OperationActivate)),
				msg.Bytes(kmip14.TagUniqueBatchItemID, id),
				msg.Enum(kmip14.TagResultStatus, uint32(kmip14.ResultStatusOperationFailed)),
				msg.Enum(kmip14.TagResultReason, uint32(kmip14.ResultReasonItemNotFound)),
				msg.Text(kmip14.TagResultMessage, "no such key"))),
		},
		{
			name: "1.1 operation without payload",
			req:  request(msg.Version{Major: 1, Minor: 1}, nil, item(kmip14.OperationDiscoverVersions)),
			want: msg.Struct(kmip14.TagResponseMessage, header(msg.Version{Major: 1, Minor: 1}, 1), msg.Struct(kmip14.TagBatchItem,
				msg.Enum(kmip14.TagOperation, uint32(kmip14.OperationDiscoverVersions)),
				msg.Enum(kmip14.TagResultStatus, uint32(kmip14.ResultStatusSuccess)),
				payload())),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := roundTrip(t, cl, tt.req)
			if !bytes.Equal(got.Append(nil), tt.want.Append(nil)) {
				t.Fatalf("reply\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

// wantItem describes one reply batch item; message is a regular expression.
type wantItem struct {
	op      kmip14.Operation
	status  kmip14.ResultStatus
	reason  kmip14.ResultReason
	message string
	uid     string // expected Unique Identifier in the payload, "" for none checked
}

func ok(op kmip14.Operation, uid string) wantItem {
	return wantItem{op: op, status: kmip14.ResultStatusSuccess, uid: uid}
}

func failed(op kmip14.Operation, reason kmip14.ResultReason, message string) wantItem {
	return wantItem{op: op, status: kmip14.ResultStatusOperationFailed, reason: reason, message: message}
}

func TestBatch(t *testing.T) {
	t.Parallel()
	get := func(uid string) *msg.Node {
		if uid == "" {
			return item(kmip14.OperationGet)
		}
		return item(kmip14.OperationGet, reqPayload(msg.Text(kmip14.TagUniqueIdentifier, uid)))
	}
	cont := func(o kmip14.BatchErrorContinuationOption) []*msg.Node {
		return []*msg.Node{msg.Enum(kmip14.TagBatchErrorContinuationOption, uint32(o))}
	}
	ext := func(critical bool) *msg.Node {
		return msg.Struct(kmip14.TagMessageExtension, msg.Text(kmip14.TagVendorIdentification, "acme"),
			msg.Bool(kmip14.TagCriticalityIndicator, critical), msg.Struct(kmip14.TagExtensionInformation))
	}
	const internal = `^internal error \(request [0-9a-f]{12}\)$`
	tests := []struct {
		name        string
		version     msg.Version
		header      []*msg.Node
		items       []*msg.Node
		wantVersion msg.Version
		want        []wantItem
		wantRan     []kmip14.Operation
	}{
		{
			name:    "placeholder flows across three items",
			version: v12,
			items:   []*msg.Node{item(kmip14.OperationCreate), get(""), get("")},
			want: []wantItem{ok(kmip14.OperationCreate, "alice/1"), ok(kmip14.OperationGet, "alice/1"),
				ok(kmip14.OperationGet, "alice/1")},
			wantRan: []kmip14.Operation{kmip14.OperationCreate, kmip14.OperationGet, kmip14.OperationGet},
		},
		{
			name:    "placeholder follows the latest identifier",
			version: v12,
			items:   []*msg.Node{item(kmip14.OperationCreate), get("other"), get("")},
			want: []wantItem{ok(kmip14.OperationCreate, "alice/1"), ok(kmip14.OperationGet, "other"),
				ok(kmip14.OperationGet, "other")},
			wantRan: []kmip14.Operation{kmip14.OperationCreate, kmip14.OperationGet, kmip14.OperationGet},
		},
		{
			name:    "no placeholder without a previous identifier",
			version: v10,
			items:   []*msg.Node{get("")},
			want:    []wantItem{failed(kmip14.OperationGet, kmip14.ResultReasonInvalidField, "^no identifier and no placeholder$")},
			wantRan: []kmip14.Operation{kmip14.OperationGet},
		},
		{
			name:    "stop is the default",
			version: v10,
			items:   []*msg.Node{item(kmip14.OperationCreate), item(kmip14.OperationActivate), get("x")},
			want: []wantItem{ok(kmip14.OperationCreate, "alice/1"),
				failed(kmip14.OperationActivate, kmip14.ResultReasonItemNotFound, "^no such key$")},
			wantRan: []kmip14.Operation{kmip14.OperationCreate, kmip14.OperationActivate},
		},
		{
			name:    "stop",
			version: v12,
			header:  cont(kmip14.BatchErrorContinuationOptionStop),
			items:   []*msg.Node{item(kmip14.OperationActivate), get("x")},
			want:    []wantItem{failed(kmip14.OperationActivate, kmip14.ResultReasonItemNotFound, "^no such key$")},
			wantRan: []kmip14.Operation{kmip14.OperationActivate},
		},
		{
			name:    "undo of several items is refused before anything runs",
			version: v12,
			header:  cont(kmip14.BatchErrorContinuationOptionUndo),
			items:   []*msg.Node{get("a"), item(kmip14.OperationActivate)},
			want: []wantItem{failed(kmip14.OperationGet, kmip14.ResultReasonFeatureNotSupported, "Undo is not supported"),
				failed(kmip14.OperationActivate, kmip14.ResultReasonFeatureNotSupported, "Undo is not supported")},
		},
		{
			name:    "undo of one item runs it",
			version: v12,
			header:  cont(kmip14.BatchErrorContinuationOptionUndo),
			items:   []*msg.Node{get("a")},
			want:    []wantItem{ok(kmip14.OperationGet, "a")},
			wantRan: []kmip14.Operation{kmip14.OperationGet},
		},
		{
			name:    "asynchronous indicator is refused",
			version: v14,
			header:  []*msg.Node{msg.Bool(kmip14.TagAsynchronousIndicator, true)},
			items:   []*msg.Node{get("a")},
			want:    []wantItem{failed(kmip14.OperationGet, kmip14.ResultReasonFeatureNotSupported, "^asynchronous operations are not supported")},
		},
		{
			name:    "attestation offered is ignored, batch order is kept",
			version: v14,
			header: []*msg.Node{msg.Bool(kmip14.TagAttestationCapableIndicator, true),
				msg.Enum(kmip14.TagAttestationType, uint32(kmip14.AttestationTypeTPMQuote)), msg.Bool(kmip14.TagBatchOrderOption, true)},
			items:   []*msg.Node{get("a"), get("b")},
			want:    []wantItem{ok(kmip14.OperationGet, "a"), ok(kmip14.OperationGet, "b")},
			wantRan: []kmip14.Operation{kmip14.OperationGet, kmip14.OperationGet},
		},
		{
			name:    "continue runs everything",
			version: v12,
			header:  cont(kmip14.BatchErrorContinuationOptionContinue),
			items:   []*msg.Node{item(kmip14.OperationActivate), get("x"), item(kmip14.OperationLocate)},
			want: []wantItem{failed(kmip14.OperationActivate, kmip14.ResultReasonItemNotFound, "^no such key$"),
				ok(kmip14.OperationGet, "x"), failed(kmip14.OperationLocate, kmip14.ResultReasonItemNotFound, "^object not found$")},
			wantRan: []kmip14.Operation{kmip14.OperationActivate, kmip14.OperationGet, kmip14.OperationLocate},
		},
		{
			name:    "critical extension fails without running",
			version: v14,
			header:  cont(kmip14.BatchErrorContinuationOptionContinue),
			items:   []*msg.Node{item(kmip14.OperationGet, reqPayload(msg.Text(kmip14.TagUniqueIdentifier, "a")), ext(true)), get("b")},
			want: []wantItem{failed(kmip14.OperationGet, kmip14.ResultReasonFeatureNotSupported, "^critical message extension not supported$"),
				ok(kmip14.OperationGet, "b")},
			wantRan: []kmip14.Operation{kmip14.OperationGet},
		},
		{
			name:    "non-critical extension is ignored",
			version: v14,
			items:   []*msg.Node{item(kmip14.OperationGet, reqPayload(msg.Text(kmip14.TagUniqueIdentifier, "a")), ext(false))},
			want:    []wantItem{ok(kmip14.OperationGet, "a")},
			wantRan: []kmip14.Operation{kmip14.OperationGet},
		},
		{
			name:    "panic fails the item, the batch goes on",
			version: v12,
			header:  cont(kmip14.BatchErrorContinuationOptionContinue),
			items:   []*msg.Node{item(kmip14.OperationDestroy), get("after")},
			want: []wantItem{failed(kmip14.OperationDestroy, kmip14.ResultReasonGeneralFailure, internal),
				ok(kmip14.OperationGet, "after")},
			wantRan: []kmip14.Operation{kmip14.OperationDestroy, kmip14.OperationGet},
		},
		{
			name:    "unknown error does not leak",
			version: v10,
			items:   []*msg.Node{item(kmip14.OperationRevoke)},
			want:    []wantItem{failed(kmip14.OperationRevoke, kmip14.ResultReasonGeneralFailure, internal)},
			wantRan: []kmip14.Operation{kmip14.OperationRevoke},
		},
		{
			name:    "payload with a wrong tag is an internal error",
			version: v10,
			items:   []*msg.Node{item(kmip14.OperationQuery)},
			want:    []wantItem{failed(kmip14.OperationQuery, kmip14.ResultReasonGeneralFailure, internal)},
			wantRan: []kmip14.Operation{kmip14.OperationQuery},
		},
		{
			name:        "unsupported 1.5 answered in 1.4, only Discover Versions runs",
			version:     msg.Version{Major: 1, Minor: 5},
			header:      cont(kmip14.BatchErrorContinuationOptionContinue),
			items:       []*msg.Node{item(kmip14.OperationDiscoverVersions), get("a")},
			wantVersion: v14,
			want: []wantItem{ok(kmip14.OperationDiscoverVersions, ""),
				failed(kmip14.OperationGet, kmip14.ResultReasonInvalidMessage, `^protocol version 1\.5 is not supported$`)},
			wantRan: []kmip14.Operation{kmip14.OperationDiscoverVersions},
		},
		{
			name:        "unsupported 2.0 answered in 1.4",
			version:     msg.Version{Major: 2, Minor: 0},
			items:       []*msg.Node{get("a")},
			wantVersion: v14,
			want:        []wantItem{failed(kmip14.OperationGet, kmip14.ResultReasonInvalidMessage, `^protocol version 2\.0 is not supported$`)},
		},
		{
			name:        "unsupported 0.9 answered in 1.4",
			version:     msg.Version{Major: 0, Minor: 9},
			items:       []*msg.Node{item(kmip14.OperationDiscoverVersions)},
			wantVersion: v14,
			want:        []wantItem{ok(kmip14.OperationDiscoverVersions, "")},
			wantRan:     []kmip14.Operation{kmip14.OperationDiscoverVersions},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newScript()
			var logs logBuf
			srv := kmiptest.NewServer(t, h, withLog(&logs))
			cl := srv.Dial(t, "alice")
			resp := roundTrip(t, cl, request(tt.version, tt.header, tt.items...))
			wantV := tt.wantVersion
			if wantV == (msg.Version{}) {
				wantV = tt.version
			}
			if got := replyVersion(resp); got != wantV {
				t.Errorf("reply version %v, want %v", got, wantV)
			}
			got := resp.All(kmip14.TagBatchItem)
			if n := resp.Child(kmip14.TagResponseHeader).Child(kmip14.TagBatchCount).Int; int(n) != len(got) {
				t.Errorf("Batch Count %d for %d items", n, len(got))
			}
			if len(got) != len(tt.want) {
				t.Fatalf("%d reply items, want %d: %+v", len(got), len(tt.want), got)
			}
			for i, w := range tt.want {
				g := got[i]
				status, reason, message := kmiptest.Result(g)
				if op := kmip14.Operation(g.Child(kmip14.TagOperation).Int); op != w.op || status != w.status || reason != w.reason {
					t.Errorf("item %d: %v %v %v %q, want %v %v %v", i, op, status, reason, message, w.op, w.status, w.reason)
				}
				if w.message != "" && !regexp.MustCompile(w.message).MatchString(message) {
					t.Errorf("item %d: message %q does not match %s", i, message, w.message)
				}
				if w.uid != "" && uidOf(g) != w.uid {
					t.Errorf("item %d: uid %q, want %q", i, uidOf(g), w.uid)
				}
			}
			if ran := h.executed(); !slices.Equal(ran, tt.wantRan) {
				t.Errorf("handler ran %v, want %v", ran, tt.wantRan)
			}
			for i, w := range tt.want {
				if w.message != internal {
					continue
				}
				_, _, message := kmiptest.Result(got[i])
				id := message[len("internal error (request ") : len(message)-1]
				line := logLine(logs.String(), "request_id="+id)
				if !strings.Contains(line, "level=ERROR") || !strings.Contains(line, "op="+w.op.String()) {
					t.Errorf("no error log line for request %s:\n%s", id, logs.String())
				}
			}
		})
	}
}

// logLine returns the first log line containing s.
func logLine(logs, s string) string {
	for line := range strings.Lines(logs) {
		if strings.Contains(line, s) {
			return line
		}
	}
	return ""
}

// TestInternalErrorsAreLogged checks what the operator gets: the whole chain, and for a
// panic the stack, while the client saw only the request ID (checked in TestBatch).
func TestInternalErrorsAreLogged(t *testing.T) {
	t.Parallel()
	var logs logBuf
	srv := kmiptest.NewServer(t, newScript(), withLog(&logs))
	cl := srv.Dial(t, "alice")
	resp := roundTrip(t, cl, request(v12, []*msg.Node{msg.Enum(kmip14.TagBatchErrorContinuationOption, 1)},
		item(kmip14.OperationRevoke), item(kmip14.OperationDestroy)))
	for _, it := range resp.All(kmip14.TagBatchItem) {
		if _, _, m := kmiptest.Result(it); strings.Contains(m, "disk") || strings.Contains(m, "exploded") {
			t.Errorf("client saw internal detail %q", m)
		}
	}
	for _, want := range []string{
		`err="open /var/lib/hsmkms/secret.db: disk on fire"`, "conn_id=", "batch_item=0", "batch_item=1",
		"handler exploded", "stack=", "kmip_version=1.2",
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

// TestMaxResponseSize covers CLIENTS.md W15: the reply never exceeds the size the
// client asked for; the largest payloads give way first.
func TestMaxResponseSize(t *testing.T) {
	t.Parallel()
	srv := kmiptest.NewServer(t, newScript())
	cl := srv.Dial(t, "percona")
	data := func(n int) *msg.Node {
		return item(kmip14.OperationEncrypt, reqPayload(msg.Bytes(kmip14.TagData, bytes.Repeat([]byte{7}, n))))
	}
	tests := []struct {
		name  string
		limit int32
		items []*msg.Node
		want  []kmip14.ResultStatus
	}{
		{"fits", 8192, []*msg.Node{data(1000), data(10)}, []kmip14.ResultStatus{kmip14.ResultStatusSuccess, kmip14.ResultStatusSuccess}},
		{"largest dropped", 400, []*msg.Node{data(1000), data(10)}, []kmip14.ResultStatus{kmip14.ResultStatusOperationFailed, kmip14.ResultStatusSuccess}},
		{"both dropped", 400, []*msg.Node{data(200), data(180)}, []kmip14.ResultStatus{kmip14.ResultStatusOperationFailed, kmip14.ResultStatusOperationFailed}},
		{"no limit", 0, []*msg.Node{data(100000)}, []kmip14.ResultStatus{kmip14.ResultStatusSuccess}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := []*msg.Node{msg.Int(kmip14.TagMaximumResponseSize, tt.limit), msg.Enum(kmip14.TagBatchErrorContinuationOption, 1)}
			resp := roundTrip(t, cl, request(v10, hdr, tt.items...))
			if size := len(resp.Append(nil)); tt.limit > 0 && size > int(tt.limit) {
				t.Errorf("reply of %d bytes exceeds %d", size, tt.limit)
			}
			items := resp.All(kmip14.TagBatchItem)
			if len(items) != len(tt.want) {
				t.Fatalf("%d items, want %d", len(items), len(tt.want))
			}
			for i, it := range items {
				status, reason, message := kmiptest.Result(it)
				if status != tt.want[i] {
					t.Errorf("item %d status %v, want %v", i, status, tt.want[i])
				}
				if status == kmip14.ResultStatusSuccess {
					continue
				}
				if reason != kmip14.ResultReasonResponseTooLarge || !regexp.MustCompile(`^response of \d+ bytes exceeds Maximum Response Size \d+$`).MatchString(message) {
					t.Errorf("item %d: %v %q", i, reason, message)
				}
				if want := []ttlv.Tag{kmip14.TagOperation, kmip14.TagResultStatus, kmip14.TagResultReason, kmip14.TagResultMessage}; !slices.Equal(tags(it), want) {
					t.Errorf("item %d tags %v, want %v", i, tags(it), want)
				}
			}
		})
	}
}
