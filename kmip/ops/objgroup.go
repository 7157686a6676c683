package ops

import "github.com/hsmkms/hsmkms/meta"

// withDefaultGroup puts a new object in the server's default Object Group when the
// client named none and group is not empty. KMIP 1.x lets the server set Object Group
// ("initially set by: client or server") at Create, Create Key Pair, Register and
// Re-key, so clients that never name a group still find their keys with Locate by
// Object Group, and Group Member Default answers for them. Object creation calls it
// with Config.DefaultObjectGroup once that field is wired in (see the report to the
// lead); until then the tests are its only callers.
func withDefaultGroup(o *meta.Object, group string) {
	if group == "" {
		return
	}
	for _, a := range o.Attrs {
		if a.Name == attrObjectGroup {
			return
		}
	}
	setGeneric(o, attrObjectGroup, 0, textVal(group))
}
