package ops

import (
	"context"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
)

// discoverVersions lists the protocol versions both sides speak, newest first (KMIP
// Discover Versions). An empty client list asks for every version the server supports.
func (s *Service) discoverVersions(_ context.Context, it *kmip.Item) (*msg.Node, error) {
	out := msg.Struct(kmip14.TagResponsePayload)
	asked := it.Payload.All(kmip14.TagProtocolVersion)
	for _, a := range asked {
		major, minor := a.Child(kmip14.TagProtocolVersionMajor), a.Child(kmip14.TagProtocolVersionMinor)
		if major == nil || minor == nil || major.Type != msg.TypeInteger || minor.Type != msg.TypeInteger {
			return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "a Protocol Version needs an Integer Major and Minor")
		}
	}
	for _, v := range msg.Supported {
		if len(asked) > 0 && !contains(asked, v) {
			continue
		}
		out.Children = append(out.Children, msg.Struct(kmip14.TagProtocolVersion,
			msg.Int(kmip14.TagProtocolVersionMajor, v.Major),
			msg.Int(kmip14.TagProtocolVersionMinor, v.Minor)))
	}
	return out, nil
}

func contains(asked []*msg.Node, v msg.Version) bool {
	for _, a := range asked {
		if a.Child(kmip14.TagProtocolVersionMajor).Int == int64(v.Major) && a.Child(kmip14.TagProtocolVersionMinor).Int == int64(v.Minor) {
			return true
		}
	}
	return false
}
