//go:build e2e

package test

import (
	"testing"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/test/framework"
)

// TestDefaultObjectGroup: with server.default_object_group set, a key created
// without an Object Group joins it, one created with its own keeps that, and
// Locate by the default group finds exactly the first.
func TestDefaultObjectGroup(t *testing.T) {
	t.Parallel()
	app := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{
		Env: []string{"HSMKMS_SERVER_DEFAULT_OBJECT_GROUP=tenant-a"},
	})
	s := openKMIP(t, app, app.AdminPEM, framework.Header{Version: ver12})
	plain := createAES(s, "in-default-group")
	p := s.ok(kmip14.OperationCreate, objType(kmip14.ObjectTypeSymmetricKey), framework.Template(
		enumAttr("Cryptographic Algorithm", uint32(kmip14.CryptographicAlgorithmAES)),
		intAttr("Cryptographic Length", 128),
		intAttr("Cryptographic Usage Mask", maskEncryptDecrypt),
		framework.Attr("Object Group", msg.Text(0, "tenant-b"))))
	own := p.Child(kmip14.TagUniqueIdentifier).Text()

	for id, want := range map[string]string{plain: "tenant-a", own: "tenant-b"} {
		got := s.ok(kmip14.OperationGetAttributes, framework.UID(id), msg.Text(kmip14.TagAttributeName, "Object Group"))
		attrs := got.All(kmip14.TagAttribute)
		if len(attrs) != 1 || attrs[0].Child(kmip14.TagAttributeValue).Text() != want {
			t.Errorf("object %s: Object Group attributes %v, want exactly %q", id, attrs, want)
		}
	}
	located := s.ok(kmip14.OperationLocate, framework.Attr("Object Group", msg.Text(0, "tenant-a"))).All(kmip14.TagUniqueIdentifier)
	if len(located) != 1 || located[0].Text() != plain {
		t.Errorf("Locate Object Group tenant-a = %v, want [%s]", located, plain)
	}
}
