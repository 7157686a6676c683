package meta

import (
	"slices"
	"testing"
	"time"
)

func TestLocate(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	sec := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }
	attr := func(name, v string) Attr { return Attr{Name: name, Value: []byte(v)} }
	create(t, s,
		&Object{ID: "a", Type: 2, State: 2, Algorithm: 3, Length: 256, Owner: "alice", Created: sec(1),
			Attrs: []Attr{attr("Name", "alpha"), attr("Object Group", "g1")}},
		&Object{ID: "b", Type: 2, State: 1, Algorithm: 3, Length: 128, Owner: "bob", Created: sec(2),
			Attrs: []Attr{attr("Name", "beta")}},
		&Object{ID: "c", Type: 7, State: 2, Owner: "bob", Created: sec(3),
			Attrs: []Attr{attr("Object Group", "g1")}},
		// Same Created as b but inserted later: comes before b.
		&Object{ID: "d", Type: 2, State: 2, Algorithm: 3, Length: 256, Owner: "carol", Created: sec(2),
			Attrs: []Attr{{Name: "Name", Index: 3, Value: []byte("alpha")}, attr("Object Group", "g2")}},
		&Object{ID: "e", Type: 4, State: 2, Algorithm: 4, Length: 2048, Owner: "carol", Created: sec(0),
			Attrs: []Attr{attr("Name", "alphabet")}},
	)
	mustUpdate(t, s, func(tx *Tx) error { return tx.Grant("b", "alice") })

	tests := []struct {
		name string
		f    Filter
		want []string
	}{
		{"all, newest first", Filter{}, []string{"c", "d", "b", "a", "e"}},
		{"type", Filter{Type: 2}, []string{"d", "b", "a"}},
		{"state", Filter{State: 2}, []string{"c", "d", "a", "e"}},
		{"algorithm", Filter{Algorithm: 3}, []string{"d", "b", "a"}},
		{"length", Filter{Length: 256}, []string{"d", "a"}},
		{"owner or granted", Filter{Owner: "alice"}, []string{"b", "a"}},
		{"owner only", Filter{Owner: "bob"}, []string{"c", "b"}},
		{"unknown owner", Filter{Owner: "mallory"}, nil},
		{"attr, index ignored", Filter{Attrs: []Attr{attr("Name", "alpha")}}, []string{"d", "a"}},
		{"attr is byte exact", Filter{Attrs: []Attr{attr("Name", "alph")}}, nil},
		{"attr name must match", Filter{Attrs: []Attr{attr("Object Group", "alpha")}}, nil},
		{"two attrs", Filter{Attrs: []Attr{attr("Name", "alpha"), attr("Object Group", "g1")}}, []string{"a"}},
		{"attr and owner", Filter{Owner: "bob", Attrs: []Attr{attr("Object Group", "g1")}}, []string{"c"}},
		{"fields combined", Filter{Type: 2, State: 2, Owner: "carol"}, []string{"d"}},
		{"limit", Filter{Limit: 1}, []string{"c"}},
		{"offset and limit", Filter{Offset: 1, Limit: 2}, []string{"d", "b"}},
		{"offset only", Filter{Offset: 3}, []string{"a", "e"}},
		{"offset past end", Filter{Offset: 5}, nil},
		{"filter then page", Filter{Type: 2, Offset: 1, Limit: 1}, []string{"b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			mustView(t, s, func(tx *Tx) (err error) {
				got, err = tx.Locate(tc.f)
				return err
			})
			if !slices.Equal(got, tc.want) {
				t.Errorf("Locate(%+v) = %q, want %q", tc.f, got, tc.want)
			}
		})
	}
}
