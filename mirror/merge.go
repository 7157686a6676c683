package mirror

import (
	"bytes"
	"slices"
	"strings"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/meta"
)

// rank orders KMIP states along the lifecycle, which only moves forward:
// Pre-Active, Active, Deactivated, Compromised, Destroyed, Destroyed
// Compromised. Compromised and Destroyed are not ordered by KMIP (each can
// follow the other); merge resolves that pair to Destroyed Compromised.
func rank(state uint32) int {
	switch kmip14.State(state) {
	case kmip14.StatePreActive:
		return 1
	case kmip14.StateActive:
		return 2
	case kmip14.StateDeactivated:
		return 3
	case kmip14.StateCompromised:
		return 4
	case kmip14.StateDestroyed:
		return 5
	case kmip14.StateDestroyedCompromised:
		return 6
	}
	return 0
}

func compromised(state uint32) bool {
	s := kmip14.State(state)
	return s == kmip14.StateCompromised || s == kmip14.StateDestroyedCompromised
}

func isDestroyed(state uint32) bool {
	s := kmip14.State(state)
	return s == kmip14.StateDestroyed || s == kmip14.StateDestroyedCompromised
}

// lifeAfter reports whether a's lifecycle supersedes b's: further along the
// lifecycle, or as far and written later (the origin breaks clock ties).
func lifeAfter(a, b *meta.Object) bool {
	if ra, rb := rank(a.State), rank(b.State); ra != rb {
		return ra > rb
	}
	if a.Rev.LifeClock != b.Rev.LifeClock {
		return a.Rev.LifeClock > b.Rev.LifeClock
	}
	return a.Rev.LifeOrigin > b.Rev.LifeOrigin
}

// grantsAfter reports whether a's grants supersede b's: last writer wins,
// independently of the attributes, so that a revoked grant is not restored by
// a later change of an attribute elsewhere.
func grantsAfter(a, b *meta.Object) bool {
	if a.Rev.GrantClock != b.Rev.GrantClock {
		return a.Rev.GrantClock > b.Rev.GrantClock
	}
	return a.Rev.GrantOrigin > b.Rev.GrantOrigin
}

// attrsAfter reports whether a's attributes supersede b's: last writer wins.
func attrsAfter(a, b *meta.Object) bool {
	if a.Rev.Clock != b.Rev.Clock {
		return a.Rev.Clock > b.Rev.Clock
	}
	return a.Rev.Origin > b.Rev.Origin
}

// attrRev is the revision of attribute name in o: zero when no write
// changed it since the object was created.
func attrRev(o *meta.Object, name string) meta.AttrRev {
	for _, r := range o.AttrRevs {
		if r.Name == name {
			return r
		}
	}
	return meta.AttrRev{Name: name}
}

// mergeAttrs merges the attributes name by name: each name's instances come
// from the side whose write of that name is later (clock, then origin), so
// concurrent changes of different attributes both survive, and a deletion
// (a revision without instances) wins over an older value.
func mergeAttrs(l, r *meta.Object) ([]meta.Attr, []meta.AttrRev) {
	names := map[string]bool{}
	for _, o := range []*meta.Object{l, r} {
		for _, a := range o.Attrs {
			names[a.Name] = true
		}
		for _, ar := range o.AttrRevs {
			names[ar.Name] = true
		}
	}
	var (
		attrs []meta.Attr
		revs  []meta.AttrRev
	)
	for name := range names {
		lr, rr := attrRev(l, name), attrRev(r, name)
		from, rev := l, lr
		if rr.Clock > lr.Clock || (rr.Clock == lr.Clock && rr.Origin > lr.Origin) {
			from, rev = r, rr
		}
		for _, a := range from.Attrs {
			if a.Name == name {
				attrs = append(attrs, a)
			}
		}
		if rev.Clock != 0 || rev.Origin != "" {
			revs = append(revs, rev)
		}
	}
	slices.SortFunc(attrs, func(a, b meta.Attr) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return a.Index - b.Index
	})
	slices.SortFunc(revs, func(a, b meta.AttrRev) int { return strings.Compare(a.Name, b.Name) })
	return attrs, revs
}

func sameAttr(a, b meta.Attr) bool {
	return a.Name == b.Name && a.Index == b.Index && bytes.Equal(a.Value, b.Value)
}

// version is one appliance's copy of an object with its grants.
type version struct {
	o      *meta.Object
	grants []string
}

// merge combines the local version (nil when the object is new here) with a
// peer's. The result does not depend on the order versions arrive in: the
// object's own fields come from its last writer, each attribute name from
// the last writer of that name, the grants from their last writer, the
// lifecycle from the version furthest along it. Material is the local blob when there is one,
// else the remote's (which the caller has rewrapped for this token), and
// none once destroyed. fresh means the merge made a lifecycle no version
// had (a Destroy concurrent with a Compromise gives Destroyed Compromised),
// which the caller stores under a new local lifecycle revision so that it
// supersedes both. changed means the result differs from local.
func merge(local *version, remote version) (out version, fresh, changed bool) {
	if local == nil {
		cp := *remote.o
		if isDestroyed(cp.State) {
			cp.Wrapped = nil
		}
		return version{o: &cp, grants: remote.grants}, false, true
	}
	l, r := local.o, remote.o
	aw := l
	if attrsAfter(r, l) {
		aw = r
	}
	gw, grants := l, local.grants
	if grantsAfter(r, l) {
		gw, grants = r, remote.grants
	}
	lw, other := l, r
	if lifeAfter(r, l) {
		lw, other = r, l
	}
	cp := *aw
	cp.Attrs, cp.AttrRevs = mergeAttrs(l, r)
	cp.State, cp.Activation, cp.Deactivation = lw.State, lw.Activation, lw.Deactivation
	cp.Destroyed, cp.Compromise, cp.CompromiseOccurrence = lw.Destroyed, lw.Compromise, lw.CompromiseOccurrence
	cp.RevocationReason, cp.RevocationMessage = lw.RevocationReason, lw.RevocationMessage
	cp.Rev.LifeClock, cp.Rev.LifeOrigin = lw.Rev.LifeClock, lw.Rev.LifeOrigin
	cp.Rev.GrantClock, cp.Rev.GrantOrigin = gw.Rev.GrantClock, gw.Rev.GrantOrigin
	if kmip14.State(lw.State) == kmip14.StateDestroyed && compromised(other.State) {
		cp.State = uint32(kmip14.StateDestroyedCompromised)
		cp.Compromise, cp.CompromiseOccurrence = other.Compromise, other.CompromiseOccurrence
		cp.RevocationReason, cp.RevocationMessage = other.RevocationReason, other.RevocationMessage
		fresh = true
	}
	cp.Wrapped, cp.KEK = l.Wrapped, l.KEK
	if cp.Wrapped == nil && !isDestroyed(l.State) {
		cp.Wrapped, cp.KEK = r.Wrapped, r.KEK
	}
	if isDestroyed(cp.State) {
		cp.Wrapped = nil
	}
	cp.Rev.MSeq = l.Rev.MSeq
	changed = fresh || cp.Rev != l.Rev || (cp.Wrapped == nil) != (l.Wrapped == nil) ||
		!slices.Equal(grants, local.grants) || !slices.Equal(cp.AttrRevs, l.AttrRevs) ||
		!slices.EqualFunc(cp.Attrs, l.Attrs, sameAttr)
	return version{o: &cp, grants: grants}, fresh, changed
}
