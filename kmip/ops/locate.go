package ops

import (
	"context"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/meta"
)

// locate finds the objects matching every given attribute (KMIP Locate), newest first.
// Clients see only objects they own or were granted; administrators see all. With an
// Object Group and Object Group Member (KMIP 1.1+), Group Member Fresh finds only
// the group's Fresh objects (no key was ever served; none is made on the fly) and
// Group Member Default finds the group's default member: by this server's policy the
// newest Active member, else the newest member.
func (s *Service) locate(ctx context.Context, it *kmip.Item) (*msg.Node, error) {
	c := s.caller(ctx)
	f := meta.Filter{}
	if !c.admin {
		f.Owner = c.identity
	}
	if n := it.Payload.Child(kmip14.TagMaximumItems); n != nil {
		if n.Type != msg.TypeInteger || n.Int < 0 {
			return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Maximum Items must be a non-negative Integer")
		}
		f.Limit = int(n.Int)
	}
	if n := it.Payload.Child(kmip14.TagOffsetItems); n != nil && it.Version.AtLeast(1, 3) {
		if n.Type != msg.TypeInteger || n.Int < 0 {
			return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Offset Items must be a non-negative Integer")
		}
		f.Offset = int(n.Int)
	}
	member, err := groupMember(it)
	if err != nil {
		return nil, err
	}
	var typed []attr // typed attributes meta does not index; a date given twice is a range (KMIP 1.x)
	grouped := false
	for _, n := range it.Payload.All(kmip14.TagAttribute) {
		a, err := parseAttribute(n)
		if err != nil {
			return nil, err
		}
		if a.value == nil {
			return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "attribute %q has no Attribute Value", a.name)
		}
		switch a.name {
		case attrObjectType:
			f.Type = uint32(a.value.Int)
		case attrAlgorithm:
			f.Algorithm = uint32(a.value.Int)
		case attrLength:
			f.Length = int32(a.value.Int)
		case attrUID:
			// An identifier narrows to one object; matched after the query below.
			typed = append(typed, a)
		case attrState, attrUsageMask, attrInitialDate, attrLastChange, attrActivationDate, attrDeactivationDate,
			attrDestroyDate, attrCompromiseDate, attrCompromiseOccur:
			typed = append(typed, a)
		default:
			grouped = grouped || a.name == attrObjectGroup
			f.Attrs = append(f.Attrs, meta.Attr{Name: a.name, Value: encodeValue(a.value)})
		}
	}
	if member != 0 && !grouped {
		return nil, kmip.Errorf(kmip14.ResultReasonInvalidField, "Object Group Member applies to an Object Group: add an Object Group attribute")
	}
	// From 1.3 a reply to a request that pages (Maximum or Offset Items) says how many
	// objects matched in all. The query runs unpaged and is filtered and paged here:
	// State changes with time (settle), and destroyed objects are found only by a
	// request that asks for their State (the profiles' test cases expect a destroyed
	// key not to be located by its identifier).
	counted := it.Version.AtLeast(1, 3) && (f.Limit > 0 || f.Offset > 0)
	limit, offset := f.Limit, f.Offset
	f.Limit, f.Offset = 0, 0
	byState := false
	for _, a := range typed {
		byState = byState || a.name == attrState
	}
	now := s.now()
	var ids []string
	var def groupDefault // Group Member Default's pick, found in the same pass
	err = s.store.View(ctx, func(tx *meta.Tx) error {
		found, err := tx.Locate(f)
		if err != nil {
			return err
		}
		for _, id := range found {
			o, err := tx.Get(id)
			if err != nil {
				return err
			}
			settle(o, now)
			fresh := member != kmip14.ObjectGroupMemberGroupMemberFresh || genericBool(o, attrFresh, true)
			if (byState || !destroyed(o)) && fresh && matchTyped(o, typed) {
				ids = append(ids, id)
				def.consider(o)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if member == kmip14.ObjectGroupMemberGroupMemberDefault {
		ids = def.ids()
	}
	total := len(ids)
	if offset >= len(ids) {
		ids = nil
	} else {
		ids = ids[offset:]
	}
	if limit > 0 && len(ids) > limit {
		ids = ids[:limit]
	}
	out := msg.Struct(kmip14.TagResponsePayload)
	if counted {
		out.Children = append(out.Children, msg.Int(kmip14.TagLocatedItems, int32(total)))
	}
	for _, id := range ids {
		out.Children = append(out.Children, msg.Text(kmip14.TagUniqueIdentifier, id))
	}
	return out, nil
}

// groupMember reads Locate's Object Group Member (KMIP 1.1+; ignored before, like
// the other fields a version does not define); 0 when absent.
func groupMember(it *kmip.Item) (kmip14.ObjectGroupMember, error) {
	n := it.Payload.Child(kmip14.TagObjectGroupMember)
	if n == nil || !it.Version.AtLeast(1, 1) {
		return 0, nil
	}
	m := kmip14.ObjectGroupMember(n.Int)
	if n.Type != msg.TypeEnumeration || (m != kmip14.ObjectGroupMemberGroupMemberFresh && m != kmip14.ObjectGroupMemberGroupMemberDefault) {
		return 0, kmip.Errorf(kmip14.ResultReasonInvalidField, "Object Group Member must be Group Member Fresh or Group Member Default")
	}
	return m, nil
}

// groupDefault picks a group's default member from its members, seen newest first:
// the newest Active one, else the newest one.
type groupDefault struct{ newest, active string }

func (g *groupDefault) consider(o *meta.Object) {
	if g.newest == "" {
		g.newest = o.ID
	}
	if g.active == "" && kmip14.State(o.State) == kmip14.StateActive {
		g.active = o.ID
	}
}

func (g *groupDefault) ids() []string {
	switch {
	case g.active != "":
		return []string{g.active}
	case g.newest != "":
		return []string{g.newest}
	}
	return nil
}

// matchTyped checks conditions on typed attributes meta does not index: equality for a
// single value, an inclusive range when a date attribute appears twice.
func matchTyped(o *meta.Object, conds []attr) bool {
	have := map[string]*msg.Node{}
	for _, a := range attributes(o) {
		if _, ok := have[a.name]; !ok {
			have[a.name] = a.value
		}
	}
	byName := map[string][]*msg.Node{}
	for _, c := range conds {
		byName[c.name] = append(byName[c.name], c.value)
	}
	for name, vals := range byName {
		v, ok := have[name]
		if !ok {
			return false
		}
		switch {
		case len(vals) == 2 && v.Type == msg.TypeDateTime:
			lo, hi := vals[0].Int, vals[1].Int
			if lo > hi {
				lo, hi = hi, lo
			}
			if v.Int < lo || v.Int > hi {
				return false
			}
		default:
			for _, want := range vals {
				if want.Type != v.Type || want.Int != v.Int || string(want.Bytes) != string(v.Bytes) {
					return false
				}
			}
		}
	}
	return true
}
