package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip/msg"
)

// Raw operation names of hsm.Token.RawRate that give the ceilings.
const (
	rawEncrypt64 = "encrypt64"
	rawExport    = "export"
	rawGenerate  = "generate"
)

// fixtureKeys is how many active AES-256 keys Get, Get Attributes and Encrypt cycle
// through on each server.
const fixtureKeys = 16

// workload is one measured operation.
type workload struct {
	name    string // row label
	raw     string // RawRate operation giving its ceiling; "" for none
	newConn bool   // each operation is a fresh TLS connection, one Get, and a close
	op      kmip14.Operation
	reqs    func(keys []string) [][]byte // requests each worker cycles through
	check   func(*msg.Node) error
}

// Row labels.
const (
	opCreate  = "Create"
	opGet     = "Get"
	opGetAttr = "Get Attributes"
	opEncrypt = "Encrypt 64 B"
	opNewConn = "New connection (TLS + Get)"
)

var workloads = []workload{
	{name: opCreate, raw: rawGenerate, op: kmip14.OperationCreate,
		reqs:  func([]string) [][]byte { return [][]byte{createAES256()} },
		check: func(p *msg.Node) error { _, err := checkCreated(p); return err }},
	{name: opGet, raw: rawExport, op: kmip14.OperationGet, reqs: each(get), check: checkGot},
	{name: opGetAttr, op: kmip14.OperationGetAttributes, reqs: each(getState), check: checkState},
	{name: opEncrypt, raw: rawEncrypt64, op: kmip14.OperationEncrypt, reqs: each(encrypt64), check: checkEncrypted},
	{name: opNewConn, newConn: true, op: kmip14.OperationGet, reqs: each(get), check: checkGot},
}

// MaxClients is the highest concurrency level measured; a raw-rate token needs at
// least this many sessions so that its ceiling is not capped by its pool.
const MaxClients = 8

// clientCounts are the concurrency levels of every workload.
var clientCounts = []int{1, MaxClients}

func each(build func(id string) []byte) func([]string) [][]byte {
	return func(keys []string) [][]byte {
		out := make([][]byte, len(keys))
		for i, k := range keys {
			out[i] = build(k)
		}
		return out
	}
}

// target is a running KMIP server under measurement.
type target struct {
	name string
	addr string
	tls  *tls.Config
	keys []string // active AES-256 keys made by prepare
}

// prepare creates and activates the fixture keys on one connection.
func (t *target) prepare(ctx context.Context) error {
	c, err := dial(ctx, t.addr, t.tls)
	if err != nil {
		return fmt.Errorf("prepare %s: %w", t.name, err)
	}
	defer c.Close()
	create := createAES256()
	for range fixtureKeys {
		p, err := c.call(kmip14.OperationCreate, create)
		if err != nil {
			return fmt.Errorf("prepare %s: %w", t.name, err)
		}
		id, err := checkCreated(p)
		if err != nil {
			return fmt.Errorf("prepare %s: %w", t.name, err)
		}
		if _, err := c.call(kmip14.OperationActivate, activate(id)); err != nil {
			return fmt.Errorf("prepare %s: %w", t.name, err)
		}
		t.keys = append(t.keys, id)
	}
	return nil
}

// ioSlack bounds how long a single call may run past the end of a measurement before
// the run is declared stuck.
const ioSlack = 15 * time.Second

// measure runs w with clients concurrent workers for d. Persistent connections are
// opened before the clock starts. Any failed operation ends the run with its reason.
func (t *target) measure(ctx context.Context, w workload, clients int, d time.Duration) (Sample, error) {
	s, err := t.run(ctx, w, clients, d)
	if err != nil {
		return Sample{}, fmt.Errorf("measure %s %s with %s: %w", t.name, w.name, clientsLabel(clients), err)
	}
	return s, nil
}

func (t *target) run(ctx context.Context, w workload, clients int, d time.Duration) (Sample, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	reqs := w.reqs(t.keys)
	var conns []*conn
	if !w.newConn {
		for range clients {
			c, err := dial(ctx, t.addr, t.tls)
			if err != nil {
				closeAll(conns)
				return Sample{}, err
			}
			conns = append(conns, c)
		}
		// Closing the connections unblocks a worker stuck in a call when the run is
		// cancelled (ctrl-C or another worker's failure); the deferred cancel closes
		// them on return too.
		context.AfterFunc(ctx, func() { closeAll(conns) })
	}
	var (
		wg    sync.WaitGroup
		lats  = make([][]time.Duration, clients)
		errs  = make([]error, clients)
		start = time.Now()
		end   = start.Add(d)
	)
	for _, c := range conns {
		if err := c.tc.SetDeadline(end.Add(ioSlack)); err != nil {
			return Sample{}, fmt.Errorf("set deadline: %w", err)
		}
	}
	for i := range clients {
		var c *conn
		if !w.newConn {
			c = conns[i]
		}
		wg.Go(func() {
			lat := make([]time.Duration, 0, 1024)
			for n := i; ctx.Err() == nil; n++ {
				t0 := time.Now()
				if !t0.Before(end) {
					break
				}
				req := reqs[n%len(reqs)]
				var err error
				if w.newConn {
					err = t.once(ctx, w, req, end)
				} else {
					err = call(c, w, req)
				}
				if err != nil {
					if ctx.Err() == nil {
						errs[i] = err
					}
					cancel()
					break
				}
				lat = append(lat, time.Since(t0))
			}
			lats[i] = lat
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return Sample{}, err
	}
	if err := ctx.Err(); err != nil {
		return Sample{}, err
	}
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	return summarize(all, elapsed), nil
}

// once is one new-connection operation: handshake, one request, close.
func (t *target) once(ctx context.Context, w workload, req []byte, end time.Time) error {
	c, err := dial(ctx, t.addr, t.tls)
	if err != nil {
		return err
	}
	defer c.Close()
	defer context.AfterFunc(ctx, func() { c.Close() })()
	if err := c.tc.SetDeadline(end.Add(ioSlack)); err != nil {
		return fmt.Errorf("set deadline: %w", err)
	}
	return call(c, w, req)
}

func call(c *conn, w workload, req []byte) error {
	p, err := c.call(w.op, req)
	if err != nil {
		return err
	}
	return w.check(p)
}

func closeAll(conns []*conn) {
	for _, c := range conns {
		c.Close()
	}
}
