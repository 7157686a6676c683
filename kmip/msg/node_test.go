package msg_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip/msg"
)

// unhex decodes TTLV hex written with '|' and spaces between fields for readability.
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.NewReplacer("|", "", " ", "", "\n", "", "\t", "").Replace(s))
	if err != nil {
		t.Fatalf("bad test hex: %v", err)
	}
	return b
}

func TestNodeRoundTrip(t *testing.T) {
	t.Parallel()
	ts := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	tests := []struct {
		name string
		node *msg.Node
		hex  string
	}{
		{"integer", msg.Int(kmip14.TagBatchCount, -2), "42000d|02|00000004|fffffffe00000000"},
		{"long", msg.Long(kmip14.TagBatchCount, 1<<40), "42000d|03|00000008|0000010000000000"},
		{"enum", msg.Enum(kmip14.TagOperation, 0x1E), "42005c|05|00000004|0000001e00000000"},
		{"bool true", msg.Bool(kmip14.TagCriticalityIndicator, true), "420026|06|00000008|0000000000000001"},
		{"bool false", msg.Bool(kmip14.TagCriticalityIndicator, false), "420026|06|00000008|0000000000000000"},
		{"text padded", msg.Text(kmip14.TagUniqueIdentifier, "abc"), "420094|07|00000003|6162630000000000"},
		{"text empty", msg.Text(kmip14.TagUniqueIdentifier, ""), "420094|07|00000000"},
		{"bytes 8", msg.Bytes(kmip14.TagUniqueBatchItemID, []byte("12345678")), "420093|08|00000008|3132333435363738"},
		{"date", msg.Date(kmip14.TagTimeStamp, ts), "420092|09|00000008|00000000663881d9"},
		{"interval", msg.Interval(kmip14.TagTimeStamp, 60), "420092|0a|00000004|0000003c00000000"},
		{"big positive high bit", msg.BigInt(kmip14.TagModulus, big.NewInt(0x80)), "420052|04|00000008|0000000000000080"},
		{"big negative", msg.BigInt(kmip14.TagModulus, big.NewInt(-1)), "420052|04|00000008|ffffffffffffffff"},
		{"structure skips nil", msg.Struct(kmip14.TagProtocolVersion,
			msg.Int(kmip14.TagProtocolVersionMajor, 1), nil, msg.Int(kmip14.TagProtocolVersionMinor, 4)),
			"420069|01|00000020| 42006a|02|00000004|0000000100000000 42006b|02|00000004|0000000400000000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			want := unhex(t, tt.hex)
			got := tt.node.Append(nil)
			if !bytes.Equal(got, want) {
				t.Fatalf("Append = %x\nwant     %x", got, want)
			}
			if tt.node.Size() != len(want) {
				t.Fatalf("Size = %d, want %d", tt.node.Size(), len(want))
			}
			back, err := msg.Decode(got)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !back.Equal(tt.node) {
				t.Fatalf("Decode(Append(n)) = %+v, want %+v", back, tt.node)
			}
		})
	}
}

func TestBig(t *testing.T) {
	t.Parallel()
	for _, v := range []int64{0, 1, -1, 127, 128, -128, -129, 1 << 62, -(1 << 62)} {
		n := msg.BigInt(kmip14.TagModulus, big.NewInt(v))
		if len(n.Bytes)%8 != 0 || n.Big().Int64() != v {
			t.Errorf("BigInt(%d) = %x, reads back %v", v, n.Bytes, n.Big())
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	deep := msg.Text(kmip14.TagUniqueIdentifier, "x")
	for range msg.MaxDepth + 1 {
		deep = msg.Struct(kmip14.TagRequestPayload, deep)
	}
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "truncated item header"},
		{"short header", unhex(t, "42009401"), "truncated item header"},
		{"bad tag", unhex(t, "410094|07|00000000"), "invalid tag"},
		{"length past end", unhex(t, "420094|07|00000010|6162630000000000"), "exceeds"},
		{"padding missing", unhex(t, "420094|07|00000003|616263"), "padding truncated"},
		{"integer length 8", unhex(t, "42000d|02|00000008|0000000100000000"), "want 4"},
		{"long length 4", unhex(t, "42000d|03|00000004|0000000100000000"), "want 8"},
		{"boolean 2", unhex(t, "420026|06|00000008|0000000000000002"), "boolean value 2"},
		{"big integer length 4", unhex(t, "420052|04|00000004|0000000100000000"), "big integer length"},
		{"unknown type", unhex(t, "420094|0c|00000000"), "unknown item type"},
		{"structure length 4", unhex(t, "420069|01|00000004|0000000100000000"), "not a multiple of 8"},
		{"trailing bytes", unhex(t, "420094|07|00000000|00"), "trailing"},
		{"child overruns parent", unhex(t, "420069|01|00000008|42006a|02|00000004|0000000100000000"), "exceeds"},
		{"too deep", deep.Append(nil), "nesting deeper"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n, err := msg.Decode(tt.in)
			if !errors.Is(err, msg.ErrMalformed) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Decode = %v, %v; want ErrMalformed containing %q", n, err, tt.want)
			}
		})
	}
}

func TestCloneIsDeep(t *testing.T) {
	t.Parallel()
	orig := msg.Struct(kmip14.TagRequestPayload, msg.Bytes(kmip14.TagData, []byte{1, 2, 3}))
	c := orig.Clone()
	c.Children[0].Bytes[0] = 9
	if orig.Children[0].Bytes[0] != 1 || orig.Equal(c) {
		t.Fatal("Clone shares bytes with the original")
	}
}

func FuzzDecode(f *testing.F) {
	for _, seed := range seedMessages() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		n, err := msg.Decode(in)
		if err != nil {
			if !errors.Is(err, msg.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		out := n.Append(nil)
		if len(out) != len(in) || n.Size() != len(in) {
			t.Fatalf("re-encoded %d bytes (Size %d) from %d", len(out), n.Size(), len(in))
		}
		back, err := msg.Decode(out)
		if err != nil || !back.Equal(n) {
			t.Fatalf("re-decode: %v", err)
		}
		_, _ = msg.ParseRequest(n) // must not panic whatever the tree
	})
}
