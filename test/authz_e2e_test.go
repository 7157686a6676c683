//go:build e2e

package test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/test/framework"
)

// TestAuthorisationRoles configures a role in hsmkms.toml and checks, over real TLS
// with certificates the appliance issued, that it holds for the certificate it names
// (operations and scope), that other clients stay confined to their own and granted
// keys, and that `hsmkms keys grant` opens one key to another identity.
func TestAuthorisationRoles(t *testing.T) {
	t.Parallel()
	app := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{NoServe: true})
	roles := `
[[auth.roles]]
name = "auditor"
operations = ["Locate", "Get Attributes"]
all_objects = true
identities = ["auditor-1"]
`
	f, err := os.OpenFile(filepath.Join(app.Dir, "hsmkms.toml"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(roles); err != nil {
		t.Fatal(err)
	}
	f.Close()
	app.Serve(t)
	ca := framework.ReadFile(t, app.CAPEM)
	dial := func(name string) func(op kmip14.Operation, p ...*msg.Node) framework.Reply {
		bundle := framework.ReadFile(t, app.IssueClient(t, name, "client"))
		c, err := framework.Dial(t.Context(), app.Addr, bundle, ca)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return func(op kmip14.Operation, p ...*msg.Node) framework.Reply {
			root, err := c.RoundTrip(framework.Request(framework.Header{Version: msg.Version{Major: 1, Minor: 4}}, framework.Item(op, nil, p...)))
			if err != nil {
				t.Fatal(err)
			}
			return framework.Reply{Root: root}
		}
	}
	owner, auditor, other := dial("owner-1"), dial("auditor-1"), dial("other-1")
	created := owner(kmip14.OperationCreate, msg.Enum(kmip14.TagObjectType, uint32(kmip14.ObjectTypeSymmetricKey)), framework.Template(
		framework.Attr("Cryptographic Algorithm", msg.Enum(0, uint32(kmip14.CryptographicAlgorithmAES))),
		framework.Attr("Cryptographic Length", msg.Int(0, 256)),
		framework.Attr("Cryptographic Usage Mask", msg.Int(0, int32(kmip14.CryptographicUsageMaskEncrypt)))))
	if st, reason := created.Status(0); st != kmip14.ResultStatusSuccess {
		t.Fatalf("owner Create: %v %v", st, reason)
	}
	id := created.Payload(0).Child(kmip14.TagUniqueIdentifier).Text()
	tests := []struct {
		name string
		call func(op kmip14.Operation, p ...*msg.Node) framework.Reply
		op   kmip14.Operation
		want kmip14.ResultReason // 0: success
	}{
		{"auditor reads another's attributes", auditor, kmip14.OperationGetAttributes, 0},
		{"auditor may not Get key material", auditor, kmip14.OperationGet, kmip14.ResultReasonPermissionDenied},
		{"auditor may not Destroy", auditor, kmip14.OperationDestroy, kmip14.ResultReasonPermissionDenied},
		{"another client may not read it", other, kmip14.OperationGetAttributes, kmip14.ResultReasonPermissionDenied},
		{"the owner reads it", owner, kmip14.OperationGet, 0},
	}
	for _, tc := range tests {
		st, reason := tc.call(tc.op, framework.UID(id)).Status(0)
		if (tc.want == 0 && st != kmip14.ResultStatusSuccess) || (tc.want != 0 && reason != tc.want) {
			t.Errorf("%s: %v %v, want %v", tc.name, st, reason, tc.want)
		}
	}
	loc := auditor(kmip14.OperationLocate)
	if got := loc.Payload(0).All(kmip14.TagUniqueIdentifier); len(got) != 1 || got[0].Text() != id {
		t.Errorf("auditor Locate: %v, want the owner's key", got)
	}
	app.MustCLI(t, "keys", "grant", id, "other-1")
	if st, reason := other(kmip14.OperationGetAttributes, framework.UID(id)).Status(0); st != kmip14.ResultStatusSuccess {
		t.Errorf("after keys grant, the other client: %v %v", st, reason)
	}
}
