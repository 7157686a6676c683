package mirror

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"hash"
	"slices"
	"strings"
	"time"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/meta"
)

// Timeouts of the mirror conversations.
const (
	handshakeTimeout = 10 * time.Second
	heartbeat        = time.Second      // an idle stream says so this often
	silence          = 10 * time.Second // a link without a frame for this long is dead
	pageSize         = 256              // journal entries per frame
)

// pairMarker replaces the local KEK label of material rewrapped under the
// pair KEK for the wire.
const pairMarker = "pair"

// handle runs one inbound connection: a pairing, a journal stream or an
// anti-entropy exchange, told apart by the first frame.
func (n *Node) handle(ctx context.Context, c *tls.Conn) {
	defer c.Close()
	remote := c.RemoteAddr().String()
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	if err := c.HandshakeContext(ctx); err != nil {
		n.log.Warn("mirror: handshake failed", "remote_addr", remote, "err", err)
		return
	}
	spki, err := peerSPKI(c)
	if err != nil {
		n.log.Warn("mirror: refused connection", "remote_addr", remote, "err", err)
		return
	}
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	f, err := readFrame(r)
	if err != nil {
		n.log.Warn("mirror: unreadable first frame", "remote_addr", remote, "err", err)
		return
	}
	if f.T == tJoin {
		n.acceptJoin(ctx, remote, spki, w, f)
		return
	}
	p := n.peerBySPKI(spki)
	if p == nil && n.mayRefresh() {
		// A pairing just made by `mirror join` on this appliance is in the
		// database before the periodic reread finds it.
		n.refresh(ctx)
		p = n.peerBySPKI(spki)
	}
	if p == nil || p.ID != f.From {
		n.log.Warn("mirror: refused connection: the certificate is not a paired appliance's",
			"remote_addr", remote, "fingerprint", Fingerprint(spki), "claimed_id", f.From)
		_ = writeFrame(w, &frame{T: tError, Error: "this appliance is not paired with yours"})
		return
	}
	_ = c.SetDeadline(time.Time{})
	switch f.T {
	case tPull:
		err = n.stream(ctx, c, r, w, p, f.Cursor)
	case tDigests:
		err = n.serveDigests(ctx, c, r, w, p)
	default:
		err = fmt.Errorf("unexpected %q frame", f.T)
	}
	if err != nil && ctx.Err() == nil {
		n.log.Debug("mirror: connection ended", "peer", p.ID, "remote_addr", remote, "err", err)
	}
}

// stream sends p the journal after cursor, then every new change as it
// commits, and reads p's acknowledgements, until either side stops.
func (n *Node) stream(ctx context.Context, c *tls.Conn, r *bufio.Reader, w *bufio.Writer, p *peer, cursor int64) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	n.setFlag(p, &p.streaming, true)
	defer n.setFlag(p, &p.streaming, false)
	var head int64
	if err := n.cfg.Store.View(ctx, func(tx *meta.Tx) (err error) {
		head, err = tx.JournalHead()
		return err
	}); err != nil {
		return fmt.Errorf("read journal head: %w", err)
	}
	if cursor > head {
		// The peer has applied positions this journal never reached: this
		// database was restored or replaced. Replaying it all is harmless.
		n.log.Warn("mirror: peer's cursor is past this journal's end (restored database?); replaying the journal",
			"peer", p.ID, "cursor", cursor, "head", head)
		cursor = 0
	}
	go func() {
		defer cancel()
		for {
			_ = c.SetReadDeadline(time.Now().Add(silence))
			f, err := readFrame(r)
			if err != nil {
				return
			}
			switch f.T {
			case tAck:
				n.setAcked(p.ID, f.Pos)
				n.setRemoteErr(p, "")
			case tNack:
				n.setRemoteErr(p, f.Error)
			}
		}
	}()
	// lastSent paces the heartbeat by what was last written, not by loop
	// turns: other commits (status rows, say) wake the loop every second and
	// must not postpone the heartbeat forever.
	lastSent := time.Now()
	var rev revocationSender
	for ctx.Err() == nil {
		wait := n.changed()
		es, through, err := n.outgoing(ctx, p, cursor)
		if err != nil {
			// Tell the peer why its stream stops (its status shows it), e.g. a
			// token failure here.
			n.log.Warn("mirror: cannot send changes", "peer", p.ID, "err", err)
			_ = c.SetWriteDeadline(time.Now().Add(silence))
			_ = writeFrame(w, &frame{T: tError, Error: "the sending appliance failed: " + err.Error()})
			return err
		}
		if len(es) > 0 || through > cursor {
			_ = c.SetWriteDeadline(time.Now().Add(silence))
			if err := writeFrame(w, &frame{T: tChanges, Entries: es, Through: through, Revoked: rev.changed(n)}); err != nil {
				return fmt.Errorf("send changes: %w", err)
			}
			cursor, lastSent = through, time.Now()
			continue
		}
		select {
		case <-wait:
		case <-time.After(heartbeat - time.Since(lastSent)):
			// Also the poll for changes other processes (the CLI) committed.
			_ = c.SetWriteDeadline(time.Now().Add(silence))
			if err := writeFrame(w, &frame{T: tChanges, Through: cursor, Revoked: rev.changed(n)}); err != nil {
				return fmt.Errorf("send heartbeat: %w", err)
			}
			lastSent = time.Now()
		case <-ctx.Done():
		}
	}
	return nil
}

// revocationSender attaches the revocation list to a stream's frames when it
// changed since it was last sent (at most once a second: reading it costs a
// file read).
type revocationSender struct {
	sent    string // digest of the list last sent
	checked time.Time
}

func (r *revocationSender) changed(n *Node) []string {
	if n.cfg.Revocations == nil || time.Since(r.checked) < heartbeat {
		return nil
	}
	r.checked = time.Now()
	list, err := n.cfg.Revocations.List()
	if err != nil {
		n.log.Warn("mirror: cannot read the revocation list to share it", "err", err)
		return nil
	}
	slices.Sort(list)
	sum := sha256.Sum256([]byte(strings.Join(list, "\n")))
	if d := hex.EncodeToString(sum[:]); d != r.sent && len(list) > 0 {
		r.sent = d
		return list
	}
	return nil
}

// mayRefresh rate-limits the rereads of pairings that unknown callers cause.
func (n *Node) mayRefresh() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if time.Since(n.lastRefresh) < 500*time.Millisecond {
		return false
	}
	n.lastRefresh = time.Now()
	return true
}

func (n *Node) setFlag(p *peer, f *bool, v bool) {
	n.mu.Lock()
	*f = v
	if v {
		p.lastContact = time.Now()
	}
	n.mu.Unlock()
}

func (n *Node) setRemoteErr(p *peer, msg string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if msg != "" && p.remoteErr != msg {
		n.log.Warn("mirror: peer cannot apply changes", "peer", p.ID, "err", msg)
	}
	p.remoteErr = msg
}

// outgoing reads a page of the journal after cursor for p: entries p wrote
// itself and nobody changed since are left out, material is rewrapped under
// the pair KEK. through is the last position read.
func (n *Node) outgoing(ctx context.Context, p *peer, cursor int64) ([]entry, int64, error) {
	var cs []meta.Change
	err := n.cfg.Store.View(ctx, func(tx *meta.Tx) (err error) {
		cs, err = tx.Changes(cursor, pageSize)
		return err
	})
	if err != nil {
		return nil, cursor, fmt.Errorf("read journal: %w", err)
	}
	through := cursor
	if len(cs) > 0 {
		through = cs[len(cs)-1].Object.Rev.MSeq
	}
	var es []entry
	for _, c := range cs {
		if r := c.Object.Rev; r.Origin == p.ID && r.LifeOrigin == p.ID && r.GrantOrigin == p.ID {
			continue
		}
		e, err := n.export(ctx, p, c)
		if err != nil {
			return nil, cursor, err
		}
		es = append(es, e)
	}
	return es, through, nil
}

// export turns a local object into a wire entry for p.
func (n *Node) export(ctx context.Context, p *peer, c meta.Change) (entry, error) {
	o := *c.Object
	e := entry{Object: &o, Grants: c.Grants}
	if o.Wrapped != nil && o.KEK != "" {
		kind := n.cfg.KindOf(&o)
		w, err := n.cfg.Keys.Rewrap(ctx, hsm.Wrapped{Blob: o.Wrapped, KEK: o.KEK}, kind, p.KEK)
		if err != nil {
			return entry{}, fmt.Errorf("rewrap object %s for peer %s: %w", o.ID, p.ID, err)
		}
		o.Wrapped, o.KEK, e.Kind = w.Blob, pairMarker, int(kind)
	}
	o.Rev.MSeq = 0
	return e, nil
}

// buckets is the number of ID ranges anti-entropy compares.
const buckets = 256

func bucketOf(id string) int {
	sum := sha256.Sum256([]byte(id))
	return int(sum[0])
}

// digests hashes every object's revision into its bucket.
func (n *Node) digests(ctx context.Context) ([]string, []meta.RevEntry, error) {
	var revs []meta.RevEntry
	err := n.cfg.Store.View(ctx, func(tx *meta.Tx) (err error) {
		revs, err = tx.Revisions()
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	hs := make([]hash.Hash, buckets)
	for i := range hs {
		hs[i] = sha256.New()
	}
	for _, e := range revs {
		fmt.Fprintf(hs[bucketOf(e.ID)], "%q %d %q %d %q %d %q %q\n", e.ID, e.Rev.Clock, e.Rev.Origin,
			e.Rev.LifeClock, e.Rev.LifeOrigin, e.Rev.GrantClock, e.Rev.GrantOrigin, e.Attrs)
	}
	out := make([]string, buckets)
	for i, h := range hs {
		out[i] = hex.EncodeToString(h.Sum(nil))
	}
	return out, revs, nil
}

// serveDigests answers an anti-entropy exchange: the bucket digests, then
// every object in the buckets the peer found different.
func (n *Node) serveDigests(ctx context.Context, c *tls.Conn, r *bufio.Reader, w *bufio.Writer, p *peer) error {
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	ds, revs, err := n.digests(ctx)
	if err != nil {
		_ = writeFrame(w, &frame{T: tError, Error: "cannot read the journal"})
		return err
	}
	if err := writeFrame(w, &frame{T: tDigests, Digests: ds}); err != nil {
		return err
	}
	f, err := readFrame(r)
	if err != nil || f.T != tFetch {
		return err // the peer found nothing to repair
	}
	want := make(map[int]bool, len(f.Buckets))
	for _, b := range f.Buckets {
		want[b] = true
	}
	var ids []string
	for _, e := range revs {
		if want[bucketOf(e.ID)] {
			ids = append(ids, e.ID)
		}
	}
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), pageSize)]
		ids = ids[len(chunk):]
		var cs []meta.Change
		if err := n.cfg.Store.View(ctx, func(tx *meta.Tx) (err error) {
			cs, err = tx.ObjectsByID(chunk)
			return err
		}); err != nil {
			return err
		}
		es := make([]entry, 0, len(cs))
		for _, ch := range cs {
			e, err := n.export(ctx, p, ch)
			if err != nil {
				return err
			}
			es = append(es, e)
		}
		_ = c.SetDeadline(time.Now().Add(time.Minute))
		if err := writeFrame(w, &frame{T: tChanges, Entries: es}); err != nil {
			return err
		}
	}
	return writeFrame(w, &frame{T: tChanges, Through: -1}) // end of the repair
}
