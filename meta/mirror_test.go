package meta

import (
	"errors"
	"maps"
	"slices"
	"testing"
	"time"
)

func getObj(t *testing.T, s *Store, id string) *Object {
	t.Helper()
	var o *Object
	mustView(t, s, func(tx *Tx) (err error) {
		o, err = tx.Get(id)
		return err
	})
	return o
}

func TestRevisions(t *testing.T) {
	s, _ := openTest(t)
	create(t, s, &Object{ID: "a", State: 1, Wrapped: []byte{1}}, &Object{ID: "b", State: 1, Wrapped: []byte{2}})
	a0, b0 := getObj(t, s, "a"), getObj(t, s, "b")
	if a0.Rev.Origin == "" || a0.Rev.Clock == 0 || a0.Rev.LifeClock != a0.Rev.Clock || b0.Rev.Clock <= a0.Rev.Clock || b0.Rev.MSeq <= a0.Rev.MSeq {
		t.Fatalf("create revisions: a %+v, b %+v", a0.Rev, b0.Rev)
	}
	if d := time.Since(ClockTime(a0.Rev.Clock)); d < 0 || d > time.Minute {
		t.Errorf("clock time %v is not now", ClockTime(a0.Rev.Clock))
	}
	steps := []struct {
		name     string
		change   func(o *Object)
		lifeMove bool
	}{
		{"attribute only", func(o *Object) { o.Attrs = []Attr{{Name: "Name", Value: []byte("x")}} }, false},
		{"state", func(o *Object) { o.State = 2 }, true},
		{"date", func(o *Object) { o.Deactivation = time.Unix(1e9, 0) }, true},
		{"material erased", func(o *Object) { o.Wrapped = nil }, true},
		{"nothing", func(o *Object) {}, false},
	}
	for _, st := range steps {
		before := getObj(t, s, "a")
		o := getObj(t, s, "a")
		st.change(o)
		mustUpdate(t, s, func(tx *Tx) error { return tx.Put(o) })
		after := getObj(t, s, "a")
		if after.Rev.Clock <= before.Rev.Clock || after.Rev.MSeq <= before.Rev.MSeq {
			t.Errorf("%s: attribute revision did not advance: %+v -> %+v", st.name, before.Rev, after.Rev)
		}
		if moved := after.Rev.LifeClock != before.Rev.LifeClock; moved != st.lifeMove {
			t.Errorf("%s: lifecycle revision moved %v, want %v", st.name, moved, st.lifeMove)
		}
	}
	// Put records which attribute names it changed, at its clock.
	var revs []AttrRev
	mustView(t, s, func(tx *Tx) (err error) { revs, err = tx.AttrRevs("a"); return err })
	if len(revs) != 1 || revs[0].Name != "Name" || revs[0].Origin != a0.Rev.Origin || revs[0].Clock <= a0.Rev.Clock {
		t.Errorf("attribute revisions after the steps: %+v", revs)
	}
	nameRev := revs[0]
	o := getObj(t, s, "a")
	o.Attrs = nil // delete Name: a newer revision without instances
	mustUpdate(t, s, func(tx *Tx) error { return tx.Put(o) })
	mustView(t, s, func(tx *Tx) (err error) { revs, err = tx.AttrRevs("a"); return err })
	if len(revs) != 1 || revs[0].Clock <= nameRev.Clock {
		t.Errorf("deleting Name: revisions %+v", revs)
	}
	// Grants have their own revision: a grant or revoke advances only it.
	for _, change := range []func(tx *Tx) error{
		func(tx *Tx) error { return tx.Grant("b", "carol") },
		func(tx *Tx) error { return tx.Revoke("b", "carol") },
		func(tx *Tx) error { return tx.SetGrants("b", []string{"dave"}) },
	} {
		before := getObj(t, s, "b")
		mustUpdate(t, s, change)
		after := getObj(t, s, "b")
		if after.Rev.GrantClock <= before.Rev.GrantClock || after.Rev.Clock != before.Rev.Clock ||
			after.Rev.LifeClock != before.Rev.LifeClock || after.Rev.MSeq <= before.Rev.MSeq {
			t.Errorf("grant change: %+v -> %+v", before.Rev, after.Rev)
		}
	}
}

func TestJournalAndApply(t *testing.T) {
	s, _ := openTest(t)
	create(t, s, &Object{ID: "a", State: 1}, &Object{ID: "b", State: 1})
	o := getObj(t, s, "a")
	mustUpdate(t, s, func(tx *Tx) error { return tx.Put(o) }) // a moves after b
	var cs []Change
	mustView(t, s, func(tx *Tx) (err error) { cs, err = tx.Changes(0, 10); return err })
	if ids := []string{cs[0].Object.ID, cs[1].Object.ID}; len(cs) != 2 || !slices.Equal(ids, []string{"b", "a"}) {
		t.Fatalf("journal = %v, want b then a, each once", ids)
	}
	mustView(t, s, func(tx *Tx) (err error) { cs, err = tx.Changes(cs[0].Object.Rev.MSeq, 10); return err })
	if len(cs) != 1 || cs[0].Object.ID != "a" {
		t.Fatalf("journal after b = %d entries", len(cs))
	}
	// A peer's version is stored with its revision, at a new journal position.
	peer := &Object{ID: "p", State: 2, Wrapped: []byte{9},
		Rev:      Rev{Clock: 1 << 60, Origin: "peer", LifeClock: 5, LifeOrigin: "peer"},
		AttrRevs: []AttrRev{{Name: "Name", Clock: 1 << 59, Origin: "peer"}}}
	var rev Rev
	mustUpdate(t, s, func(tx *Tx) (err error) { rev, err = tx.Apply(peer, []string{"dave"}); return err })
	got := getObj(t, s, "p")
	if got.Rev.Clock != 1<<60 || got.Rev.Origin != "peer" || got.Rev.LifeClock != 5 || got.Rev.MSeq != rev.MSeq || rev.MSeq <= cs[0].Object.Rev.MSeq {
		t.Errorf("applied revision %+v (returned %+v)", got.Rev, rev)
	}
	mustView(t, s, func(tx *Tx) error {
		g, err := tx.Grants("p")
		if !slices.Equal(g, []string{"dave"}) {
			t.Errorf("grants %v", g)
		}
		return err
	})
	// The journal carries attributes and grants; HaveMaterial tells what needs a key.
	mustUpdate(t, s, func(tx *Tx) error {
		o := getObj(t, s, "b")
		o.Attrs = []Attr{{Name: "Name", Value: []byte("n")}}
		o.State, o.Wrapped = 5, nil
		return tx.Put(o)
	})
	mustView(t, s, func(tx *Tx) error {
		cs, err := tx.Changes(rev.MSeq-1, 10)
		if err != nil {
			return err
		}
		if len(cs) != 2 || cs[0].Object.ID != "p" || !slices.Equal(cs[0].Grants, []string{"dave"}) ||
			len(cs[0].Object.AttrRevs) != 1 || cs[0].Object.AttrRevs[0].Clock != 1<<59 ||
			cs[1].Object.ID != "b" || len(cs[1].Object.Attrs) != 1 {
			t.Errorf("journal tail %+v", cs)
		}
		have, err := tx.HaveMaterial([]string{"a", "b", "p", "nope"})
		if want := map[string]bool{"a": false, "b": true, "p": true}; !maps.Equal(have, want) {
			t.Errorf("HaveMaterial = %v, want %v", have, want)
		}
		return err
	})
	// Local clocks stay above every stored one, a peer's included (the HLC).
	create(t, s, &Object{ID: "c"})
	if c := getObj(t, s, "c"); c.Rev.Clock <= 1<<60 {
		t.Errorf("local clock %d did not pass the peer's", c.Rev.Clock)
	}
	var revs []RevEntry
	mustView(t, s, func(tx *Tx) (err error) { revs, err = tx.Revisions(); return err })
	if len(revs) != 4 || revs[0].ID != "a" || revs[3].ID != "p" {
		t.Errorf("revisions %+v", revs)
	}
}

func TestPeersAndInvites(t *testing.T) {
	s, _ := openTest(t)
	p := &Peer{ID: "x", Name: "x", Addr: "h:1", SPKI: "00", ECDHPub: []byte{4}, CAPEM: []byte("ca"), KEK: "hsmkms-pair-x", Paired: time.Now()}
	mustUpdate(t, s, func(tx *Tx) error { return tx.PutPeer(p) })
	mustUpdate(t, s, func(tx *Tx) error { return tx.SetCursor("x", 42) })
	mustUpdate(t, s, func(tx *Tx) error {
		return tx.SetPeerStatus(&Peer{ID: "x", State: "in-sync", Acked: 7, LagP99: 30 * time.Millisecond, LastContact: time.Now()})
	})
	var ps []*Peer
	mustView(t, s, func(tx *Tx) (err error) { ps, err = tx.Peers(); return err })
	if len(ps) != 1 || ps[0].Cursor != 42 || ps[0].State != "in-sync" || ps[0].Acked != 7 || ps[0].LagP99 != 30*time.Millisecond || string(ps[0].CAPEM) != "ca" {
		t.Fatalf("peers %+v", ps)
	}
	mustUpdate(t, s, func(tx *Tx) error { return tx.AddInvite("h1", time.Now().Add(time.Minute)) })
	mustUpdate(t, s, func(tx *Tx) error { return tx.AddInvite("old", time.Now().Add(-time.Minute)) })
	mustView(t, s, func(tx *Tx) error {
		hs, err := tx.Invites()
		if !slices.Equal(hs, []string{"h1"}) {
			t.Errorf("invites %v, want only the unexpired one", hs)
		}
		return err
	})
	mustUpdate(t, s, func(tx *Tx) error { return tx.UseInvite("h1") })
	if err := s.Update(t.Context(), func(tx *Tx) error { return tx.UseInvite("h1") }); !errors.Is(err, ErrNotFound) {
		t.Errorf("second use: %v, want ErrNotFound", err)
	}
	mustUpdate(t, s, func(tx *Tx) error { return tx.DeletePeer("x") })
	if err := s.Update(t.Context(), func(tx *Tx) error { return tx.DeletePeer("x") }); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
}
