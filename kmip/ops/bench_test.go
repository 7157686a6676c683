package ops_test

import (
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/hsm/hsmtest"
	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/kmiptest"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/kmip/ops"
	"github.com/hsmkms/hsmkms/meta"
)

// BenchmarkStack measures whole requests through TLS, the server, the operations, the
// real token and a real SQLite file, in one process so a CPU profile shows where a
// request's time goes (`go test -bench Stack -cpuprofile cpu.out ./kmip/ops`).
func BenchmarkStack(b *testing.B) {
	tok := hsmtest.Token(b)
	st, err := meta.Open(b.Context(), filepath.Join(b.TempDir(), "meta.db"), meta.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	mux := kmip.NewMux()
	ops.New(ops.Config{Keys: tok, Store: st}).Register(mux)
	srv := kmiptest.NewServer(b, mux, func(s *kmip.Server) { s.Logger = slog.New(slog.DiscardHandler) })
	setup := srv.Dial(b, "bench")
	create := msg.Struct(kmip14.TagRequestPayload, msg.Enum(kmip14.TagObjectType, uint32(kmip14.ObjectTypeSymmetricKey)), aesTemplate(256))
	item, err := setup.Call(b.Context(), v12, uint32(kmip14.OperationCreate), create)
	if err != nil {
		b.Fatal(err)
	}
	id := item.Child(kmip14.TagResponsePayload).Child(kmip14.TagUniqueIdentifier).Text()
	if _, err := setup.Call(b.Context(), v12, uint32(kmip14.OperationActivate), msg.Struct(kmip14.TagRequestPayload, uidNode(id))); err != nil {
		b.Fatal(err)
	}
	cases := []struct {
		name    string
		op      kmip14.Operation
		payload *msg.Node
	}{
		{"GetAttributes", kmip14.OperationGetAttributes, msg.Struct(kmip14.TagRequestPayload, uidNode(id), msg.Text(kmip14.TagAttributeName, "State"))},
		{"Get", kmip14.OperationGet, msg.Struct(kmip14.TagRequestPayload, uidNode(id))},
		{"Encrypt64", kmip14.OperationEncrypt, msg.Struct(kmip14.TagRequestPayload, uidNode(id), msg.Bytes(kmip14.TagData, make([]byte, 64)))},
		{"Create", kmip14.OperationCreate, create},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			b.SetParallelism(4) // 4 x GOMAXPROCS(2) = 8 clients
			b.RunParallel(func(pb *testing.PB) {
				c := srv.Dial(b, "bench")
				for pb.Next() {
					item, err := c.Call(b.Context(), v12, uint32(tc.op), tc.payload)
					if err != nil {
						b.Error(err)
						return
					}
					if st, _, m := kmiptest.Result(item); st != kmip14.ResultStatusSuccess {
						b.Errorf("%v: %s", tc.op, m)
						return
					}
				}
			})
		})
	}
}
