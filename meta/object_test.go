package meta

import (
	"errors"
	"os"
	"reflect"
	"slices"
	"testing"
	"time"
)

var (
	berlin = time.FixedZone("CET", 3600)
	t0     = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
)

// fullObject sets every field, with times in a non-UTC zone and sub-second
// parts that meta must drop, and attributes out of order.
func fullObject(id string) *Object {
	at := func(d time.Duration) time.Time { return t0.Add(d).In(berlin).Add(123 * time.Millisecond) }
	return &Object{
		ID: id, Type: 2, State: 2, Owner: "CN=alice", Algorithm: 3, Length: 256,
		UsageMask: 12, Format: 1, SecretType: 0, Wrapped: []byte{0xa6, 0x59, 0x59, 0xa6, 1, 2, 3},
		KEK: "master-1", Created: at(0), Updated: at(time.Hour), Activation: at(2 * time.Hour),
		Deactivation: at(3 * time.Hour), Destroyed: at(4 * time.Hour), Compromise: at(5 * time.Hour),
		CompromiseOccurrence: at(6 * time.Hour), RevocationReason: 2, RevocationMessage: "lost laptop",
		Attrs: []Attr{
			{Name: "Name", Index: 1, Value: []byte("second")},
			{Name: "x-custom", Index: 0, Value: nil},
			{Name: "Digest", Index: 0, Value: []byte{0, 1, 2}},
			{Name: "Name", Index: 0, Value: []byte("first")},
		},
	}
}

// stored is what meta returns for o: UTC seconds and sorted attributes.
// withoutRev drops the revision meta assigns, for comparing with stored().
func withoutRev(o *Object) *Object {
	c := *o
	c.Rev = Rev{}
	return &c
}

func stored(o *Object) *Object {
	w := *o
	for _, p := range []*time.Time{&w.Created, &w.Updated, &w.Activation, &w.Deactivation,
		&w.Destroyed, &w.Compromise, &w.CompromiseOccurrence} {
		if !p.IsZero() {
			*p = time.Unix(p.Unix(), 0).UTC()
		}
	}
	w.Attrs = nil
	for _, a := range o.Attrs {
		if a.Value == nil {
			a.Value = []byte{}
		}
		w.Attrs = append(w.Attrs, a)
	}
	slices.SortFunc(w.Attrs, func(a, b Attr) int {
		if a.Name != b.Name {
			if a.Name < b.Name {
				return -1
			}
			return 1
		}
		return a.Index - b.Index
	})
	return &w
}

func TestObjectRoundTrip(t *testing.T) {
	t.Parallel()
	minimal := func(id string) *Object { return &Object{ID: id, Type: 7, State: 1, Owner: "CN=bob"} }
	tests := []struct {
		name        string
		create, put *Object
	}{
		{name: "all fields then cleared", create: fullObject("k1"), put: minimal("k1")},
		{name: "zero times then all fields", create: minimal("k2"), put: fullObject("k2")},
		{name: "extreme values", create: &Object{
			ID: "ключ/with spaces?#", Type: 0xffffffff, State: 6, Algorithm: 0xffffffff,
			Length: -1, UsageMask: -2147483648, Created: time.Unix(0, 0), Attrs: []Attr{{Name: "", Index: -5, Value: []byte{0}}},
		}, put: fullObject("ключ/with spaces?#")},
	}
	s, _ := openTest(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, step := range []struct {
				name  string
				write func(*Tx) error
				want  *Object
			}{
				{"create", func(tx *Tx) error { return tx.Create(tc.create) }, stored(tc.create)},
				{"put", func(tx *Tx) error { return tx.Put(tc.put) }, stored(tc.put)},
			} {
				mustUpdate(t, s, step.write)
				var got *Object
				mustView(t, s, func(tx *Tx) (err error) {
					got, err = tx.Get(tc.create.ID)
					return err
				})
				if !reflect.DeepEqual(withoutRev(got), step.want) {
					t.Errorf("after %s: Get =\n%+v\nwant\n%+v", step.name, got, step.want)
				}
			}
		})
	}
}

func TestReopenPersists(t *testing.T) {
	t.Parallel()
	s, path := openTest(t)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("database file mode = %v, %v; want 0600 (it holds wrapped keys)", fi.Mode().Perm(), err)
	}
	create(t, s, fullObject("k1"))
	mustUpdate(t, s, func(tx *Tx) error { return tx.Grant("k1", "CN=bob") })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, path)
	mustView(t, s, func(tx *Tx) error {
		got, err := tx.Get("k1")
		if err != nil {
			return err
		}
		if want := stored(fullObject("k1")); !reflect.DeepEqual(withoutRev(got), want) {
			t.Errorf("Get after reopen = %+v, want %+v", got, want)
		}
		grants, err := tx.Grants("k1")
		if err != nil {
			return err
		}
		if !slices.Equal(grants, []string{"CN=bob"}) {
			t.Errorf("Grants after reopen = %q", grants)
		}
		return nil
	})
}

func TestErrors(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	create(t, s, fullObject("k1"))
	tests := []struct {
		name string
		view bool // run in View instead of Update
		fn   func(*Tx) error
		want error
	}{
		{"create existing", false, func(tx *Tx) error { return tx.Create(&Object{ID: "k1"}) }, ErrExists},
		{"get missing", true, func(tx *Tx) error { _, err := tx.Get("nope"); return err }, ErrNotFound},
		{"put missing", false, func(tx *Tx) error { return tx.Put(&Object{ID: "nope"}) }, ErrNotFound},
		{"duplicate attribute", false, func(tx *Tx) error {
			return tx.Create(&Object{ID: "k2", Attrs: []Attr{{Name: "Name"}, {Name: "Name"}}})
		}, ErrConflict},
		{"empty ID", false, func(tx *Tx) error { return tx.Create(&Object{}) }, ErrInvalid},
		{"nil object", false, func(tx *Tx) error { return tx.Put(nil) }, ErrInvalid},
		{"grant missing", false, func(tx *Tx) error { return tx.Grant("nope", "x") }, ErrNotFound},
		{"revoke missing", false, func(tx *Tx) error { return tx.Revoke("nope", "x") }, ErrNotFound},
		{"granted missing", true, func(tx *Tx) error { _, err := tx.Granted("nope", "x"); return err }, ErrNotFound},
		{"grants missing", true, func(tx *Tx) error { _, err := tx.Grants("nope"); return err }, ErrNotFound},
		{"list after missing", true, func(tx *Tx) error { _, err := tx.List("nope", 1); return err }, ErrNotFound},
		{"create in view", true, func(tx *Tx) error { return tx.Create(&Object{ID: "k3"}) }, ErrReadOnly},
		{"put in view", true, func(tx *Tx) error { return tx.Put(fullObject("k1")) }, ErrReadOnly},
		{"grant in view", true, func(tx *Tx) error { return tx.Grant("k1", "x") }, ErrReadOnly},
		{"revoke in view", true, func(tx *Tx) error { return tx.Revoke("k1", "x") }, ErrReadOnly},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run := s.Update
			if tc.view {
				run = s.View
			}
			if err := run(t.Context(), tc.fn); !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
	// None of the failed writes changed anything.
	mustView(t, s, func(tx *Tx) error {
		got, err := tx.Get("k1")
		if err != nil {
			return err
		}
		if want := stored(fullObject("k1")); !reflect.DeepEqual(withoutRev(got), want) {
			t.Errorf("k1 changed: %+v", got)
		}
		if n, err := tx.Count(); err != nil || n != 1 {
			t.Errorf("Count = %d, %v; want 1", n, err)
		}
		return nil
	})
}

func TestListAndCount(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	var all []*Object
	for _, id := range []string{"e", "c", "a", "d", "b"} { // insertion order, not ID order
		o := &Object{ID: id, Owner: "o", Attrs: []Attr{{Name: "Name", Value: []byte("name-" + id)}}}
		all = append(all, o)
		create(t, s, o)
	}
	ids := func(objs []*Object) []string {
		var out []string
		for _, o := range objs {
			out = append(out, o.ID)
		}
		return out
	}
	tests := []struct {
		after string
		limit int
		want  []string
	}{
		{"", 0, []string{"e", "c", "a", "d", "b"}},
		{"", 2, []string{"e", "c"}},
		{"c", 2, []string{"a", "d"}},
		{"d", 2, []string{"b"}},
		{"b", 2, nil},
		{"a", -1, []string{"d", "b"}},
	}
	for _, tc := range tests {
		var got []*Object
		mustView(t, s, func(tx *Tx) (err error) {
			got, err = tx.List(tc.after, tc.limit)
			return err
		})
		if !slices.Equal(ids(got), tc.want) {
			t.Errorf("List(%q, %d) = %q, want %q", tc.after, tc.limit, ids(got), tc.want)
		}
		for _, o := range got {
			want := withoutRev(stored(all[slices.Index(ids(all), o.ID)]))
			if !reflect.DeepEqual(withoutRev(o), want) {
				t.Errorf("List(%q, %d): object %+v, want %+v", tc.after, tc.limit, o, want)
			}
		}
	}
	if n := count(t, s); n != 5 {
		t.Errorf("Count = %d, want 5", n)
	}
}

func TestGrants(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	create(t, s, &Object{ID: "k", Owner: "CN=owner"}, &Object{ID: "other", Owner: "CN=owner"})
	steps := []struct {
		name    string
		op      func(*Tx) error
		granted map[string]bool
		want    []string
	}{
		{"grant alice", func(tx *Tx) error { return tx.Grant("k", "alice") },
			map[string]bool{"alice": true, "bob": false, "CN=owner": false}, []string{"alice"}},
		{"grant alice again", func(tx *Tx) error { return tx.Grant("k", "alice") },
			map[string]bool{"alice": true}, []string{"alice"}},
		{"grant bob", func(tx *Tx) error { return tx.Grant("k", "bob") },
			map[string]bool{"alice": true, "bob": true}, []string{"alice", "bob"}},
		{"revoke alice", func(tx *Tx) error { return tx.Revoke("k", "alice") },
			map[string]bool{"alice": false, "bob": true}, []string{"bob"}},
		{"revoke alice again", func(tx *Tx) error { return tx.Revoke("k", "alice") },
			map[string]bool{"alice": false, "bob": true}, []string{"bob"}},
	}
	for _, st := range steps {
		mustUpdate(t, s, st.op)
		mustView(t, s, func(tx *Tx) error {
			for who, want := range st.granted {
				got, err := tx.Granted("k", who)
				if err != nil {
					return err
				}
				if got != want {
					t.Errorf("%s: Granted(k, %s) = %v, want %v", st.name, who, got, want)
				}
			}
			got, err := tx.Grants("k")
			if err != nil {
				return err
			}
			if !slices.Equal(got, st.want) {
				t.Errorf("%s: Grants = %q, want %q", st.name, got, st.want)
			}
			other, err := tx.Grants("other")
			if err != nil {
				return err
			}
			if len(other) != 0 {
				t.Errorf("%s: grants leaked to another object: %q", st.name, other)
			}
			return nil
		})
	}
}
