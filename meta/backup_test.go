package meta

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

func backupObj(i int, state uint32, wrapped []byte) *Object {
	now := time.Unix(1700000000+int64(i), 0).UTC()
	return &Object{ID: fmt.Sprintf("obj-%04d", i), Type: 2, State: state, Owner: "alice",
		Algorithm: 3, Length: 256, Wrapped: wrapped, KEK: "hsmkms-master-1", Created: now, Updated: now,
		Attrs: []Attr{{Name: "Name", Index: 0, Value: []byte{byte(i)}}, {Name: "Name", Index: 1, Value: []byte{1}}}}
}

func TestWalkSnapshot(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	const n = 3*walkPage + 7 // several pages and a partial one
	var objs []*Object
	for i := range n {
		objs = append(objs, backupObj(i, 2, bytes.Repeat([]byte{byte(i)}, 40)))
	}
	create(t, s, objs...)
	mustUpdate(t, s, func(tx *Tx) error {
		if err := tx.Grant("obj-0001", "bob"); err != nil {
			return err
		}
		return tx.Grant("obj-0001", "ann")
	})
	var seen []string
	err := s.View(t.Context(), func(tx *Tx) error {
		return tx.Walk(func(o *Object, grants []string) error {
			if len(seen) == 10 {
				// A write during the walk is not seen: the View is one snapshot.
				create(t, s, backupObj(n+1, 1, []byte("x")))
			}
			seen = append(seen, o.ID)
			if len(o.Attrs) != 2 {
				return fmt.Errorf("%s has %d attributes, want 2", o.ID, len(o.Attrs))
			}
			want := []string(nil)
			if o.ID == "obj-0001" {
				want = []string{"ann", "bob"}
			}
			if !slices.Equal(grants, want) {
				return fmt.Errorf("%s grants = %v, want %v", o.ID, grants, want)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != n || seen[0] != "obj-0000" || seen[n-1] != fmt.Sprintf("obj-%04d", n-1) {
		t.Fatalf("walked %d objects (%v ... ), want %d in order", len(seen), seen[:2], n)
	}
	stop := errors.New("stop")
	mustView(t, s, func(tx *Tx) error {
		if err := tx.Walk(func(*Object, []string) error { return stop }); err != stop {
			t.Errorf("Walk returned %v, want fn's error", err)
		}
		return nil
	})
}

func TestCensusAndKEKUsage(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	a, b, c := backupObj(1, 2, []byte("blob-a-16-bytes!")), backupObj(2, 2, []byte("blob-b-16-bytes!")), backupObj(3, 6, nil)
	b.KEK = "hsmkms-master-2"
	c.Type = 7
	create(t, s, a, b, c)
	mustView(t, s, func(tx *Tx) error {
		got, err := tx.Census()
		if err != nil {
			return err
		}
		want := []Census{{Type: 2, State: 2, Count: 2}, {Type: 7, State: 6, Count: 1}}
		if !slices.Equal(got, want) {
			t.Errorf("Census = %v, want %v", got, want)
		}
		use, err := tx.KEKUsage()
		if err != nil {
			return err
		}
		if len(use) != 2 || use["hsmkms-master-1"] != 1 || use["hsmkms-master-2"] != 1 {
			t.Errorf("KEKUsage = %v (the destroyed object holds no material)", use)
		}
		stale, err := tx.WrappedNotUnder("hsmkms-master-2", 10)
		if err != nil {
			return err
		}
		if len(stale) != 1 || stale[0].ID != a.ID || !bytes.Equal(stale[0].Wrapped, a.Wrapped) || stale[0].Length != 256 {
			t.Errorf("WrappedNotUnder = %v", stale)
		}
		return nil
	})
}

func TestSetWrappedAndGrants(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	o := backupObj(1, 2, []byte("old-blob-16bytes"))
	create(t, s, o)
	for _, tc := range []struct {
		name     string
		old, kek string
		want     bool
	}{
		{"stale blob loses", "other-blob-16byt", "hsmkms-master-1", false},
		{"stale KEK loses", "old-blob-16bytes", "hsmkms-master-9", false},
		{"current wins", "old-blob-16bytes", "hsmkms-master-1", true},
	} {
		var changed bool
		mustUpdate(t, s, func(tx *Tx) (err error) {
			changed, err = tx.SetWrapped(o.ID, []byte(tc.old), tc.kek, []byte("new-blob-16bytes"), "hsmkms-master-2")
			return err
		})
		if changed != tc.want {
			t.Errorf("%s: changed = %v", tc.name, changed)
		}
	}
	mustUpdate(t, s, func(tx *Tx) error {
		if err := tx.Grant(o.ID, "zed"); err != nil {
			return err
		}
		return tx.SetGrants(o.ID, []string{"bob", "ann"})
	})
	mustView(t, s, func(tx *Tx) error {
		got, err := tx.Get(o.ID)
		if err != nil {
			return err
		}
		if string(got.Wrapped) != "new-blob-16bytes" || got.KEK != "hsmkms-master-2" || !got.Updated.Equal(o.Updated) {
			t.Errorf("after SetWrapped: %q under %s, updated %v", got.Wrapped, got.KEK, got.Updated)
		}
		g, err := tx.Grants(o.ID)
		if !slices.Equal(g, []string{"ann", "bob"}) {
			t.Errorf("grants = %v, %v", g, err)
		}
		return nil
	})
	err := s.Update(t.Context(), func(tx *Tx) error { return tx.SetGrants("nope", nil) })
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("SetGrants on a missing object: %v", err)
	}
}

func TestExisting(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	var ids []string
	for i := range 1200 {
		if i%3 == 0 {
			create(t, s, backupObj(i, 2, nil))
		}
		ids = append(ids, fmt.Sprintf("obj-%04d", i))
	}
	mustView(t, s, func(tx *Tx) error {
		got, err := tx.Existing(append(ids, "nope"))
		if err != nil {
			return err
		}
		if len(got) != 400 || !got["obj-0000"] || got["obj-0001"] || !got["obj-1197"] {
			t.Errorf("Existing found %d: %v ...", len(got), got["obj-0000"])
		}
		return nil
	})
}
