//go:build e2e

package test

// Crash safety: SIGKILL the server at random moments under a stream of writes from
// eight clients and check, after each restart, that nothing acknowledged was lost and
// nothing half-made appeared.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"database/sql"
	"fmt"
	mrand "math/rand/v2"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/test/framework"

	// The test reads the database file as an outside observer, independent of meta.
	_ "modernc.org/sqlite"
)

const (
	crashRounds  = 20
	crashClients = 8
)

// crashObject is what the clients learnt about one object.
type crashObject struct {
	name     string
	key      []byte       // registered bytes, or those a created key first read back as
	state    kmip14.State // the last state a success reply acknowledged
	inFlight kmip14.State // target of a request the kill left unanswered; 0: none
}

// crashLedger records every acknowledged object and every create or register whose
// reply never came (by the unique name it carried).
type crashLedger struct {
	mu      sync.Mutex
	objs    map[string]*crashObject // by ID
	pending map[string]*crashObject // by name
	touched map[string]bool         // IDs to check after this round

	// What the kills left in between, as found after the restarts.
	adopted   int // created or registered, reply lost, object present
	landed    int // state change whose reply was lost but which committed
	notLanded int // state change (or create) lost before its commit
}

func (l *crashLedger) update(fn func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fn()
}

// crashClient streams Create, Register, Activate, Revoke and Destroy over one
// persistent connection until the connection dies or ctx ends. It only acts on the
// objects it made, so no two clients race on one object.
type crashClient struct {
	name string
	l    *crashLedger
	rng  *mrand.Rand
	live []string // IDs of own objects not yet destroyed
	sent int
}

// run returns nil when the kill ended the stream and an error for anything else: a
// failed reply is a server bug, since no request here can legitimately fail.
func (c *crashClient) run(ctx context.Context, addr string, cfg *tls.Config, round int) error {
	conn, err := framework.DialTLS(ctx, addr, cfg)
	if err != nil {
		return nil // killed before this client connected
	}
	defer conn.Close()
	h := framework.Header{Version: ver14}
	for ctx.Err() == nil {
		var (
			id, name string
			obj      *crashObject
			op       kmip14.Operation
			target   kmip14.State
			payload  []*msg.Node
		)
		if len(c.live) > 0 && c.rng.IntN(2) == 0 {
			i := c.rng.IntN(len(c.live))
			id = c.live[i]
			c.l.update(func() { obj = c.l.objs[id] })
			switch obj.state {
			case kmip14.StatePreActive:
				op, target = kmip14.OperationActivate, kmip14.StateActive
				payload = []*msg.Node{framework.UID(id)}
			case kmip14.StateActive:
				op, target = kmip14.OperationRevoke, kmip14.StateDeactivated
				payload = []*msg.Node{framework.UID(id), msg.Struct(kmip14.TagRevocationReason,
					msg.Enum(kmip14.TagRevocationReasonCode, uint32(kmip14.RevocationReasonCodeCessationOfOperation)))}
			default:
				op, target = kmip14.OperationDestroy, kmip14.StateDestroyed
				payload = []*msg.Node{framework.UID(id)}
				c.live = append(c.live[:i], c.live[i+1:]...)
			}
			c.l.update(func() { obj.inFlight, c.l.touched[id] = target, true })
		} else {
			c.sent++
			name = fmt.Sprintf("crash-%d-%s-%d", round, c.name, c.sent)
			obj = &crashObject{name: name, state: kmip14.StatePreActive}
			tmpl := framework.Template(intAttr("Cryptographic Usage Mask", maskEncryptDecrypt), nameAttr(name))
			if c.rng.IntN(2) == 0 {
				op = kmip14.OperationCreate
				tmpl.Children = append(tmpl.Children, enumAttr("Cryptographic Algorithm", uint32(kmip14.CryptographicAlgorithmAES)),
					intAttr("Cryptographic Length", 256))
				payload = []*msg.Node{objType(kmip14.ObjectTypeSymmetricKey), tmpl}
			} else {
				op = kmip14.OperationRegister
				obj.key = make([]byte, 32)
				rand.Read(obj.key)
				payload = []*msg.Node{objType(kmip14.ObjectTypeSymmetricKey), tmpl, symmetricKey(obj.key, kmip14.CryptographicAlgorithmAES, 256)}
			}
			c.l.update(func() { c.l.pending[name] = obj })
		}
		reply, err := conn.RoundTrip(framework.Request(h, framework.Item(op, nil, payload...)))
		if err != nil {
			return nil // the kill: what was sent stays in flight
		}
		r := framework.Reply{Root: reply}
		if st, reason := r.Status(0); st != kmip14.ResultStatusSuccess {
			return fmt.Errorf("%s: %v of %q %s: %v %v", c.name, op, id, name, st, reason)
		}
		c.l.update(func() {
			if name != "" {
				id = r.Payload(0).Child(kmip14.TagUniqueIdentifier).Text()
				delete(c.l.pending, name)
				c.l.objs[id], c.l.touched[id] = obj, true
				return
			}
			obj.state, obj.inFlight = target, 0
		})
		if name != "" {
			c.live = append(c.live, id)
		}
	}
	return nil
}

// TestCrashSafety runs crashRounds rounds of: serve, eight clients streaming writes,
// SIGKILL 50-400 ms in, restart, check. Checks after every round: each acknowledged
// object is in its acknowledged state (or in the state of the request the kill left
// unanswered); every object in the database is one a client sent; each live object
// reads back (registered bytes exactly, created keys the same bytes every time);
// destroyed objects hold no wrapped blob and live ones do; PRAGMA integrity_check.
func TestCrashSafety(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := mrand.New(mrand.NewPCG(seed, 1))
	app := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{})
	cfg, err := framework.ClientTLS(framework.ReadFile(t, app.AdminPEM), framework.ReadFile(t, app.CAPEM))
	if err != nil {
		t.Fatal(err)
	}
	db := openDBReadOnly(t, filepath.Join(app.Dir, "hsmkms.db"))
	l := &crashLedger{objs: map[string]*crashObject{}, pending: map[string]*crashObject{}, touched: map[string]bool{}}
	clients := make([]*crashClient, crashClients)
	for i := range clients {
		clients[i] = &crashClient{name: fmt.Sprintf("c%d", i), l: l, rng: mrand.New(mrand.NewPCG(seed, uint64(i+2)))}
	}
	start := time.Now()
	var cut int
	for round := range crashRounds {
		ctx, cancel := context.WithCancel(t.Context())
		errs := make(chan error, crashClients)
		var wg sync.WaitGroup
		for _, c := range clients {
			wg.Go(func() { errs <- c.run(ctx, app.Addr, cfg, round) })
		}
		<-time.After(time.Duration(50+rng.IntN(351)) * time.Millisecond)
		app.Server.Kill()
		cancel()
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("round %d: %v", round, err)
			}
		}
		if t.Failed() {
			t.FailNow()
		}
		if err := app.Server.Start(); err != nil {
			t.Fatal(err)
		}
		if err := framework.WaitForPort(app.Addr, app.Server, framework.StartTimeout); err != nil {
			t.Fatalf("round %d: restart after SIGKILL: %v", round, err)
		}
		l.mu.Lock()
		for _, o := range l.objs {
			if o.inFlight != 0 {
				cut++
			}
		}
		cut += len(l.pending)
		l.mu.Unlock()
		// The restarted server serves the next round.
		checkCrashRound(t, app, db, l, round == crashRounds-1)
	}
	t.Logf("%d rounds in %v: %d objects; %d requests cut by SIGKILL: %d committed unacknowledged creates, %d committed unacknowledged state changes, %d lost before commit",
		crashRounds, time.Since(start).Round(time.Millisecond), len(l.objs), cut, l.adopted, l.landed, l.notLanded)
}

// checkCrashRound checks the restarted server against the ledger: the objects touched
// this round (all of them when all is set) through KMIP, every row through SQL.
func checkCrashRound(t *testing.T, app *framework.Appliance, db *sql.DB, l *crashLedger, all bool) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	s := openKMIP(t, app, app.AdminPEM, framework.Header{Version: ver14})
	defer s.c.Close()
	rows := dbObjects(t, db)
	// Objects the kill cut off before their reply: present (whole) or absent, never
	// half-made; present ones join the ledger.
	for id, row := range rows {
		if _, ok := l.objs[id]; ok {
			continue
		}
		name := objectName(t, s, id)
		o, ok := l.pending[name]
		if !ok {
			t.Fatalf("object %s (name %q, state %v) was never sent by a client", id, name, kmip14.State(row.state))
		}
		delete(l.pending, name)
		l.adopted++
		l.objs[id], l.touched[id] = o, true
	}
	l.notLanded += len(l.pending)
	clear(l.pending)
	for id, o := range l.objs {
		if !all && !l.touched[id] {
			continue
		}
		row, ok := rows[id]
		if !ok {
			t.Fatalf("acknowledged object %s (%s) is missing from the database", id, o.name)
		}
		got := keyState(t, s, id)
		if got != o.state && (o.inFlight == 0 || got != o.inFlight) {
			t.Fatalf("object %s: state %v, acknowledged %v (in flight: %v)", id, got, o.state, o.inFlight)
		}
		if kmip14.State(row.state) != got {
			t.Fatalf("object %s: the database says %v, the server %v", id, kmip14.State(row.state), got)
		}
		switch {
		case o.inFlight == 0:
		case got == o.inFlight:
			l.landed++
		default:
			l.notLanded++
		}
		o.state, o.inFlight = got, 0
		if got == kmip14.StateDestroyed {
			continue
		}
		key := getSymKey(t, s, id, 256)
		if o.key == nil {
			o.key = key
		} else if !bytes.Equal(key, o.key) {
			t.Fatalf("object %s (%s): Get returned other bytes than before the crash", id, o.name)
		}
	}
	clear(l.touched)
	if len(rows) != len(l.objs) {
		t.Fatalf("database holds %d objects, the ledger %d", len(rows), len(l.objs))
	}
	checkDBInvariants(t, db)
}

// objectName returns the Name an object was created or registered with.
func objectName(t *testing.T, s *kmipSession, id string) string {
	t.Helper()
	p := s.ok(kmip14.OperationGetAttributes, framework.UID(id), msg.Text(kmip14.TagAttributeName, "Name"))
	a := p.Child(kmip14.TagAttribute)
	if a == nil {
		t.Fatalf("object %s has no Name", id)
	}
	return a.Child(kmip14.TagAttributeValue).Child(kmip14.TagNameValue).Text()
}

// openDBReadOnly opens the appliance database for inspection next to the server.
func openDBReadOnly(t *testing.T, path string) *sql.DB {
	t.Helper()
	u := url.URL{Scheme: "file", Path: path, RawQuery: "mode=ro&_busy_timeout=5000"}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

type dbRow struct{ state int }

func dbObjects(t *testing.T, db *sql.DB) map[string]dbRow {
	t.Helper()
	rs, err := db.QueryContext(t.Context(), "SELECT id, state FROM objects")
	if err != nil {
		t.Fatalf("read objects: %v", err)
	}
	defer rs.Close()
	out := map[string]dbRow{}
	for rs.Next() {
		var id string
		var r dbRow
		if err := rs.Scan(&id, &r.state); err != nil {
			t.Fatal(err)
		}
		out[id] = r
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkDBInvariants runs PRAGMA integrity_check and checks that destroyed objects
// hold no wrapped blob (nothing orphaned) and every other one holds one under a KEK.
func checkDBInvariants(t *testing.T, db *sql.DB) {
	t.Helper()
	var res string
	if err := db.QueryRowContext(t.Context(), "PRAGMA integrity_check").Scan(&res); err != nil || res != "ok" {
		t.Fatalf("PRAGMA integrity_check: %q, %v", res, err)
	}
	var bad int
	err := db.QueryRowContext(t.Context(), `SELECT count(*) FROM objects WHERE
		(state IN (5, 6) AND wrapped IS NOT NULL) OR
		(state NOT IN (5, 6) AND (wrapped IS NULL OR length(wrapped) = 0 OR kek = ''))`).Scan(&bad)
	if err != nil {
		t.Fatal(err)
	}
	if bad != 0 {
		t.Fatalf("%d objects whose wrapped blob disagrees with their state", bad)
	}
}
