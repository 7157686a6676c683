package mirror

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/meta"
)

func obj(state kmip14.State, clock, life int64, origin string, name string) *meta.Object {
	o := &meta.Object{ID: "k", State: uint32(state), Wrapped: []byte{1, 2, 3}, KEK: "m",
		Attrs: []meta.Attr{{Name: "Name", Value: []byte(name)}},
		// The write at clock set this Name.
		AttrRevs: []meta.AttrRev{{Name: "Name", Clock: clock, Origin: origin}},
		Rev:      meta.Rev{Clock: clock, Origin: origin, LifeClock: life, LifeOrigin: origin, GrantClock: life, GrantOrigin: origin}}
	if state == kmip14.StateDestroyed || state == kmip14.StateDestroyedCompromised {
		o.Wrapped = nil
		o.Destroyed = time.Unix(life, 0).UTC()
	}
	if state == kmip14.StateCompromised || state == kmip14.StateDestroyedCompromised {
		o.Compromise = time.Unix(life, 0).UTC()
		o.RevocationReason = uint32(kmip14.RevocationReasonCodeKeyCompromise)
	}
	return o
}

func TestMergeRules(t *testing.T) {
	for _, tc := range []struct {
		name        string
		local, peer *meta.Object
		wantState   kmip14.State
		wantName    string
		wantFresh   bool
		wantChanged bool
		wantKey     bool
	}{
		{"newer attributes win", obj(kmip14.StateActive, 1, 1, "a", "old"), obj(kmip14.StateActive, 2, 1, "b", "new"),
			kmip14.StateActive, "new", false, true, true},
		{"older attributes lose", obj(kmip14.StateActive, 3, 2, "a", "mine"), obj(kmip14.StateActive, 2, 1, "b", "theirs"),
			kmip14.StateActive, "mine", false, false, true},
		{"origin breaks a clock tie", obj(kmip14.StateActive, 2, 1, "a", "a"), obj(kmip14.StateActive, 2, 1, "b", "b"),
			kmip14.StateActive, "b", false, true, true},
		{"lifecycle moves forward even from an older write", obj(kmip14.StateActive, 9, 9, "a", "x"), obj(kmip14.StateDeactivated, 2, 2, "b", "y"),
			kmip14.StateDeactivated, "x", false, true, true},
		{"lifecycle never moves back", obj(kmip14.StateDeactivated, 1, 1, "a", "x"), obj(kmip14.StateActive, 5, 5, "b", "y"),
			kmip14.StateDeactivated, "y", false, true, true},
		{"destroy is a tombstone that erases material", obj(kmip14.StateDeactivated, 5, 5, "a", "x"), obj(kmip14.StateDestroyed, 2, 2, "b", "x"),
			kmip14.StateDestroyed, "x", false, true, false},
		{"destroy and compromise meet", obj(kmip14.StateCompromised, 5, 5, "a", "x"), obj(kmip14.StateDestroyed, 6, 6, "b", "x"),
			kmip14.StateDestroyedCompromised, "x", true, true, false},
		{"redelivery changes nothing", obj(kmip14.StateActive, 4, 3, "b", "x"), obj(kmip14.StateActive, 4, 3, "b", "x"),
			kmip14.StateActive, "x", false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, fresh, changed := merge(&version{o: tc.local}, version{o: tc.peer})
			if got := kmip14.State(out.o.State); got != tc.wantState {
				t.Errorf("state %v, want %v", got, tc.wantState)
			}
			if got := string(out.o.Attrs[0].Value); got != tc.wantName {
				t.Errorf("name %q, want %q", got, tc.wantName)
			}
			if fresh != tc.wantFresh || changed != tc.wantChanged {
				t.Errorf("fresh %v changed %v, want %v %v", fresh, changed, tc.wantFresh, tc.wantChanged)
			}
			if (out.o.Wrapped != nil) != tc.wantKey {
				t.Errorf("material kept %v, want %v", out.o.Wrapped != nil, tc.wantKey)
			}
		})
	}
}

// TestMergeGrants: a revoked grant stays revoked when another appliance
// later changes an attribute.
func TestMergeGrants(t *testing.T) {
	local := obj(kmip14.StateActive, 5, 1, "a", "x")
	local.Rev.GrantClock = 6 // grant revoked here at 6
	remote := obj(kmip14.StateActive, 7, 1, "b", "y")
	remote.Rev.GrantClock = 2 // still granted, as of 2; attribute changed at 7
	out, _, changed := merge(&version{o: local, grants: nil}, version{o: remote, grants: []string{"intruder"}})
	if !changed || string(out.o.Attrs[0].Value) != "y" {
		t.Errorf("the later attribute change was not taken")
	}
	if len(out.grants) != 0 || out.o.Rev.GrantClock != 6 {
		t.Errorf("grants %v (revision %d): the revoked grant came back", out.grants, out.o.Rev.GrantClock)
	}
}

// TestMergeAttributesByName: concurrent changes of different attributes on
// two appliances both survive; a deletion newer than a value wins.
func TestMergeAttributesByName(t *testing.T) {
	base := func(clock int64, origin string) *meta.Object {
		return &meta.Object{ID: "k", State: uint32(kmip14.StateActive), Wrapped: []byte{1},
			Rev: meta.Rev{Clock: clock, Origin: origin, LifeClock: 1, LifeOrigin: "a", GrantClock: 1, GrantOrigin: "a"}}
	}
	// Both start from {Name: n0, Contact: c0}. A changes Contact at 5; B, later,
	// changes Name at 7 and deletes Description (set at 2 on both).
	a := base(5, "a")
	a.Attrs = []meta.Attr{{Name: "Contact", Value: []byte("c-a")}, {Name: "Description", Value: []byte("d")}, {Name: "Name", Value: []byte("n0")}}
	a.AttrRevs = []meta.AttrRev{{Name: "Contact", Clock: 5, Origin: "a"}, {Name: "Description", Clock: 2, Origin: "a"}}
	b := base(7, "b")
	b.Attrs = []meta.Attr{{Name: "Contact", Value: []byte("c0")}, {Name: "Name", Value: []byte("n-b")}}
	b.AttrRevs = []meta.AttrRev{{Name: "Description", Clock: 7, Origin: "b"}, {Name: "Name", Clock: 7, Origin: "b"}}
	for _, order := range [][2]*meta.Object{{a, b}, {b, a}} {
		out, _, _ := merge(&version{o: order[0]}, version{o: order[1]})
		want := []meta.Attr{{Name: "Contact", Value: []byte("c-a")}, {Name: "Name", Value: []byte("n-b")}}
		if !reflect.DeepEqual(out.o.Attrs, want) {
			t.Errorf("merged attributes %+v, want %+v", out.o.Attrs, want)
		}
		if out.o.Rev.Clock != 7 || len(out.o.AttrRevs) != 3 {
			t.Errorf("merged revisions %+v %+v", out.o.Rev, out.o.AttrRevs)
		}
	}
}

// TestMergeConverges delivers random concurrent versions to three replicas in
// different orders, then lets them exchange until nothing changes: all must
// end identical, whatever the order.
func TestMergeConverges(t *testing.T) {
	states := []kmip14.State{kmip14.StatePreActive, kmip14.StateActive, kmip14.StateDeactivated,
		kmip14.StateCompromised, kmip14.StateDestroyed, kmip14.StateDestroyedCompromised}
	for round := range 500 {
		r := rand.New(rand.NewPCG(uint64(round), 7))
		// A revision names one content: clocks are unique per version, as
		// an appliance never hands out a clock twice.
		var versions []*meta.Object
		n := 2 + r.IntN(5)
		clocks, lifes, grantClocks := r.Perm(n), r.Perm(n), r.Perm(n)
		var grants [][]string
		for i := range n {
			origin := fmt.Sprint("node", r.IntN(3))
			o := obj(states[r.IntN(len(states))], int64(1+clocks[i]), int64(1+lifes[i]), origin, fmt.Sprint("v", i))
			o.Rev.GrantClock = int64(1 + grantClocks[i])
			versions = append(versions, o)
			grants = append(grants, []string{fmt.Sprint("id", r.IntN(3))})
		}
		replicas := make([]*version, 3)
		clock := int64(100)
		apply := func(i int, v version) bool {
			out, fresh, changed := merge(replicas[i], v)
			if !changed {
				return false
			}
			if fresh { // what Apply does: a new local lifecycle revision
				clock++
				out.o.Rev.LifeClock, out.o.Rev.LifeOrigin = clock, fmt.Sprint("node", i)
			}
			replicas[i] = &out
			return true
		}
		for i := range replicas {
			for _, j := range r.Perm(len(versions)) {
				apply(i, version{o: versions[j], grants: grants[j]})
			}
		}
		for changed := true; changed; {
			changed = false
			for i := range replicas {
				for j := range replicas {
					if i != j && apply(i, *replicas[j]) {
						changed = true
					}
				}
			}
		}
		for i := 1; i < len(replicas); i++ {
			if !reflect.DeepEqual(replicas[i].o, replicas[0].o) || !reflect.DeepEqual(replicas[i].grants, replicas[0].grants) {
				t.Fatalf("round %d: replica %d = %+v, replica 0 = %+v", round, i, replicas[i].o, replicas[0].o)
			}
		}
	}
}
