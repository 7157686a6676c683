package ops

import (
	"testing"

	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/meta"
)

func TestWithDefaultGroup(t *testing.T) {
	t.Parallel()
	groups := func(o *meta.Object) []string {
		var out []string
		for _, a := range attributes(o) {
			if a.name == attrObjectGroup {
				out = append(out, a.value.Text())
			}
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		client []string // groups the client gave
		group  string   // the server's default
		want   []string
	}{
		{"no default configured", nil, "", nil},
		{"default applies", nil, "default", []string{"default"}},
		{"the client's group wins", []string{"mine"}, "default", []string{"mine"}},
		{"several client groups stay", []string{"a", "b"}, "default", []string{"a", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := &meta.Object{}
			var in []attr
			for _, g := range tc.client {
				in = append(in, attr{name: attrObjectGroup, value: textVal(g)})
			}
			if err := applyAttrs(o, in, msg.Version{Major: 1, Minor: 4}); err != nil {
				t.Fatal(err)
			}
			withDefaultGroup(o, tc.group)
			got := groups(o)
			if len(got) != len(tc.want) {
				t.Fatalf("groups %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("groups %v, want %v", got, tc.want)
				}
			}
		})
	}
}
