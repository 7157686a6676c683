package ops

import (
	"context"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
)

// queryOps is what Query reports: the operations Register installs, in the
// specification's order.
var queryOps = []kmip14.Operation{
	kmip14.OperationCreate, kmip14.OperationRegister, kmip14.OperationLocate, kmip14.OperationGet,
	kmip14.OperationGetAttributes, kmip14.OperationGetAttributeList, kmip14.OperationModifyAttribute,
	kmip14.OperationActivate, kmip14.OperationRevoke, kmip14.OperationDestroy, kmip14.OperationQuery,
	kmip14.OperationDiscoverVersions, kmip14.OperationEncrypt, kmip14.OperationDecrypt,
}

// since is the first protocol version defining each reported operation.
var opSince = map[kmip14.Operation]msg.Version{
	kmip14.OperationDiscoverVersions: v11,
	kmip14.OperationEncrypt:          v12,
	kmip14.OperationDecrypt:          v12,
}

// query reports the server's capabilities (KMIP Query) for the functions it answers:
// operations, object types and server information; other query functions are answered
// with nothing, as the specification allows.
func (s *Service) query(_ context.Context, it *kmip.Item) (*msg.Node, error) {
	out := msg.Struct(kmip14.TagResponsePayload)
	want := map[kmip14.QueryFunction]bool{}
	for _, f := range it.Payload.All(kmip14.TagQueryFunction) {
		want[kmip14.QueryFunction(f.Int)] = true
	}
	if want[kmip14.QueryFunctionQueryOperations] {
		for _, op := range queryOps {
			if v, ok := opSince[op]; ok && !it.Version.AtLeast(v.Major, v.Minor) {
				continue
			}
			out.Children = append(out.Children, msg.Enum(kmip14.TagOperation, uint32(op)))
		}
	}
	if want[kmip14.QueryFunctionQueryObjects] {
		for _, t := range []kmip14.ObjectType{kmip14.ObjectTypeSymmetricKey, kmip14.ObjectTypeSecretData} {
			out.Children = append(out.Children, msg.Enum(kmip14.TagObjectType, uint32(t)))
		}
	}
	if want[kmip14.QueryFunctionQueryServerInformation] {
		out.Children = append(out.Children, msg.Text(kmip14.TagVendorIdentification, s.info))
	}
	return out, nil
}
