package ops_test

import (
	"slices"
	"testing"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip/msg"
)

func groupAttr(name string) *msg.Node { return attribute("Object Group", msg.Text(0, name)) }

func (f *fixture) locateIDs(v msg.Version, query ...*msg.Node) []string {
	f.t.Helper()
	var ids []string
	for _, n := range f.must("client", v, kmip14.OperationLocate, query...).All(kmip14.TagUniqueIdentifier) {
		ids = append(ids, n.Text())
	}
	return ids
}

// TestObjectGroup covers Object Group as KMIP 1.x defines it (settable, modifiable,
// several instances, deletable) and Locate's Object Group Member.
func TestObjectGroup(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	a := f.create("client", groupAttr("g1"), groupAttr("g2"))
	b := f.create("client", groupAttr("g1"))
	c := f.create("client", groupAttr("g2"))
	fresh := msg.Enum(kmip14.TagObjectGroupMember, uint32(kmip14.ObjectGroupMemberGroupMemberFresh))
	def := msg.Enum(kmip14.TagObjectGroupMember, uint32(kmip14.ObjectGroupMemberGroupMemberDefault))

	check := func(name string, v msg.Version, want []string, query ...*msg.Node) {
		t.Helper()
		if got := f.locateIDs(v, query...); !slices.Equal(got, want) {
			t.Fatalf("%s: located %v, want %v", name, got, want)
		}
	}
	check("by group g1, newest first", v12, []string{b, a}, groupAttr("g1"))
	check("by group g2", v12, []string{c, a}, groupAttr("g2"))
	check("default member, none active: the newest", v12, []string{b}, groupAttr("g1"), def)
	f.must("client", v12, kmip14.OperationActivate, uidNode(a))
	check("default member: the newest active", v12, []string{a}, groupAttr("g1"), def)
	check("fresh members: all before any Get", v12, []string{b, a}, groupAttr("g1"), fresh)
	f.must("client", v12, kmip14.OperationGet, uidNode(b))
	check("fresh members: a served key is not fresh", v12, []string{a}, groupAttr("g1"), fresh)
	check("KMIP 1.0 has no Object Group Member", v10, []string{b, a}, groupAttr("g1"), fresh)

	// Modify the second instance (index 1): a leaves g2 for g3.
	mod := msg.Struct(kmip14.TagAttribute, msg.Text(kmip14.TagAttributeName, "Object Group"),
		msg.Int(kmip14.TagAttributeIndex, 1), msg.Text(kmip14.TagAttributeValue, "g3"))
	f.must("client", v12, kmip14.OperationModifyAttribute, uidNode(a), mod)
	check("after Modify Attribute, g2", v12, []string{c}, groupAttr("g2"))
	check("after Modify Attribute, g3", v12, []string{a}, groupAttr("g3"))
	f.must("client", v12, kmip14.OperationDeleteAttribute, uidNode(a),
		msg.Text(kmip14.TagAttributeName, "Object Group"), msg.Int(kmip14.TagAttributeIndex, 1))
	check("after Delete Attribute, g3", v12, nil, groupAttr("g3"))

	for name, tc := range map[string]struct {
		query []*msg.Node
		want  kmip14.ResultReason
	}{
		"member without a group":    {[]*msg.Node{fresh}, kmip14.ResultReasonInvalidField},
		"unknown member value":      {[]*msg.Node{groupAttr("g1"), msg.Enum(kmip14.TagObjectGroupMember, 3)}, kmip14.ResultReasonInvalidField},
		"member not an enumeration": {[]*msg.Node{groupAttr("g1"), msg.Int(kmip14.TagObjectGroupMember, 1)}, kmip14.ResultReasonInvalidField},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := f.call("client", v12, kmip14.OperationLocate, tc.query...)
			wantReason(t, err, tc.want)
		})
	}
}
