package ops

import (
	"context"
	"slices"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
)

// opSince is the first protocol version defining an operation; the others are 1.0's.
var opSince = map[kmip14.Operation]msg.Version{
	kmip14.OperationDiscoverVersions: v11,
	kmip14.OperationReKeyKeyPair:     v11,
	kmip14.OperationEncrypt:          v12,
	kmip14.OperationDecrypt:          v12,
	kmip14.OperationSign:             v12,
	kmip14.OperationSignatureVerify:  v12,
	kmip14.OperationMAC:              v12,
	kmip14.OperationMACVerify:        v12,
	kmip14.OperationRNGRetrieve:      v12,
	kmip14.OperationRNGSeed:          v12,
	kmip14.OperationHash:             v12,
	kmip14.OperationCreateSplitKey:   v12,
	kmip14.OperationJoinSplitKey:     v12,
	kmip14.OperationImport:           v14,
	kmip14.OperationExport:           v14,
}

// queryObjects are the object types Register and Create handle.
var queryObjects = []kmip14.ObjectType{
	kmip14.ObjectTypeCertificate, kmip14.ObjectTypeSymmetricKey, kmip14.ObjectTypePublicKey,
	kmip14.ObjectTypePrivateKey, kmip14.ObjectTypeTemplate, kmip14.ObjectTypeSecretData,
}

// queryProfiles are the KMIP 1.4 profiles whose OASIS test cases the server passes
// (see the conformance runner), reported as their 1.3 or 1.4 names.
var queryProfiles = map[int32][]kmip14.ProfileName{
	3: {kmip14.ProfileNameBaselineServerTLSV1_2KMIPV1_3, kmip14.ProfileNameSymmetricKeyLifecycleServerKMIPV1_3,
		kmip14.ProfileNameSymmetricKeyFoundryServerKMIPV1_3, kmip14.ProfileNameBasicCryptographicServerKMIPV1_3,
		kmip14.ProfileNameRNGCryptographicServerKMIPV1_3, kmip14.ProfileNameTapeLibraryServerKMIPV1_3},
	4: {kmip14.ProfileNameBaselineServerTLSV1_2KMIPV1_4, kmip14.ProfileNameSymmetricKeyLifecycleServerKMIPV1_4,
		kmip14.ProfileNameSymmetricKeyFoundryServerKMIPV1_4, kmip14.ProfileNameBasicCryptographicServerKMIPV1_4,
		kmip14.ProfileNameRNGCryptographicServerKMIPV1_4, kmip14.ProfileNameTapeLibraryServerKMIPV1_4},
}

// query reports what the server supports at the request's version (KMIP Query): the
// operations the Mux really dispatches (so a new operation is reported by being
// registered), object types, server information, and from 1.3 capability and profile
// information. Other query functions are answered with nothing, as the specification
// allows.
func (s *Service) query(_ context.Context, it *kmip.Item) (*msg.Node, error) {
	out := msg.Struct(kmip14.TagResponsePayload)
	want := map[kmip14.QueryFunction]bool{}
	for _, f := range it.Payload.All(kmip14.TagQueryFunction) {
		want[kmip14.QueryFunction(f.Int)] = true
	}
	v := it.Version
	if want[kmip14.QueryFunctionQueryOperations] && s.mux != nil {
		ops := s.mux.Operations()
		slices.Sort(ops)
		for _, op := range ops {
			if since, ok := opSince[kmip14.Operation(op)]; ok && !v.AtLeast(since.Major, since.Minor) {
				continue
			}
			out.Children = append(out.Children, msg.Enum(kmip14.TagOperation, op))
		}
	}
	if want[kmip14.QueryFunctionQueryObjects] {
		for _, t := range queryObjects {
			out.Children = append(out.Children, msg.Enum(kmip14.TagObjectType, uint32(t)))
		}
	}
	if want[kmip14.QueryFunctionQueryServerInformation] {
		out.Children = append(out.Children, msg.Text(kmip14.TagVendorIdentification, s.info), msg.Struct(kmip14.TagServerInformation))
	}
	if !v.AtLeast(1, 3) {
		return out, nil
	}
	if want[kmip14.QueryFunctionQueryProfiles] {
		for _, p := range queryProfiles[min(v.Minor, 4)] {
			out.Children = append(out.Children, msg.Struct(kmip14.TagProfileInformation, msg.Enum(kmip14.TagProfileName, uint32(p))))
		}
	}
	if want[kmip14.QueryFunctionQueryCapabilities] {
		c := msg.Struct(kmip14.TagCapabilityInformation,
			msg.Bool(kmip14.TagStreamingCapability, true),
			msg.Bool(kmip14.TagAsynchronousCapability, false),
			msg.Bool(kmip14.TagAttestationCapability, false))
		if v.AtLeast(1, 4) {
			c.Children = append(c.Children,
				msg.Bool(kmip14.TagBatchUndoCapability, false),
				msg.Bool(kmip14.TagBatchContinueCapability, true))
		}
		c.Children = append(c.Children,
			msg.Enum(kmip14.TagUnwrapMode, uint32(kmip14.UnwrapModeProcessed)),
			msg.Enum(kmip14.TagDestroyAction, uint32(kmip14.DestroyActionKeyMaterialDeleted)),
			msg.Enum(kmip14.TagShreddingAlgorithm, uint32(kmip14.ShreddingAlgorithmUnsupported)),
			msg.Enum(kmip14.TagRNGMode, uint32(kmip14.RNGModeSharedInstantiation)))
		out.Children = append(out.Children, c)
	}
	return out, nil
}
