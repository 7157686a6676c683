package ops

import (
	"context"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
)

// maxRandom bounds one RNG Retrieve; clients want keys and nonces, not streams.
const maxRandom = 64 << 10

// rngRetrieve returns Data Length random bytes from the token's generator (KMIP RNG
// Retrieve). RNG Seed is not offered (the token seeds its own generator), so the Mux
// answers it with Operation Not Supported and Query does not list it.
func (s *Service) rngRetrieve(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
	n := it.Payload.Child(kmip14.TagDataLength)
	if n == nil || n.Type != msg.TypeInteger || n.Int < 1 || n.Int > maxRandom {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "RNG Retrieve needs a Data Length from 1 to %d", maxRandom)
	}
	b, err := s.keys.Random(ctx, int(n.Int))
	if err != nil {
		return nil, err
	}
	return msg.Struct(kmip14.TagResponsePayload, msg.Bytes(kmip14.TagData, b)), nil
}
