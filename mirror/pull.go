package mirror

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/meta"
)

// maxCoalesce bounds the entries applied in one transaction.
const maxCoalesce = 2048

// pullLoop keeps a journal stream from p open, reconnecting with backoff.
func (n *Node) pullLoop(ctx context.Context, p *peer) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := n.pull(ctx, p)
		if ctx.Err() != nil {
			return
		}
		n.note(p, err)
		if time.Since(start) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 3*time.Second)
	}
}

// pull streams p's journal from the cursor stored here, applies each page
// durably and acknowledges it. It returns when the link breaks.
func (n *Node) pull(ctx context.Context, p *peer) error {
	cursor, err := n.cursor(ctx, p.ID)
	if err != nil {
		return err
	}
	c, err := dial(ctx, p.Addr, n.cfg.Cert, p.SPKI)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	if err := writeFrame(w, &frame{T: tPull, From: n.self, Cursor: cursor}); err != nil {
		return fmt.Errorf("ask %s for its journal: %w", p.Addr, err)
	}
	n.setFlag(p, &p.pulling, true)
	defer n.setFlag(p, &p.pulling, false)
	for {
		_ = c.SetReadDeadline(time.Now().Add(silence))
		f, err := readFrame(r)
		if err != nil {
			return fmt.Errorf("read journal from %s: %w", p.Addr, err)
		}
		switch f.T {
		case tError:
			return fmt.Errorf("%w: %s says: %s", ErrRefused, p.Addr, f.Error)
		case tChanges:
		default:
			return fmt.Errorf("read journal from %s: unexpected %q frame", p.Addr, f.T)
		}
		// Pages that arrived while the last one was applied are applied
		// together: one commit instead of one per page, which keeps the
		// receiver up with a sender that streams each commit as it happens.
		for r.Buffered() > 0 && len(f.Entries) < maxCoalesce {
			g, err := readFrame(r)
			if err != nil {
				return fmt.Errorf("read journal from %s: %w", p.Addr, err)
			}
			if g.T != tChanges {
				return fmt.Errorf("read journal from %s: unexpected %q frame", p.Addr, g.T)
			}
			f.Entries = append(f.Entries, g.Entries...)
			f.Through = max(f.Through, g.Through)
			f.Revoked = append(f.Revoked, g.Revoked...)
		}
		if err := n.addRevocations(ctx, p, f.Revoked); err != nil {
			return err
		}
		if len(f.Entries) > 0 || f.Through > cursor {
			if err := n.apply(ctx, p, f.Entries, f.Through, true); err != nil {
				_ = c.SetWriteDeadline(time.Now().Add(silence))
				_ = writeFrame(w, &frame{T: tNack, Error: err.Error()})
				return fmt.Errorf("apply changes from %s: %w", p.Addr, err)
			}
			cursor = max(cursor, f.Through)
		}
		_ = c.SetWriteDeadline(time.Now().Add(silence))
		if err := writeFrame(w, &frame{T: tAck, Pos: cursor}); err != nil {
			return fmt.Errorf("acknowledge to %s: %w", p.Addr, err)
		}
		n.note(p, nil)
	}
}

// addRevocations adds the certificate serials p revoked that this appliance
// does not refuse yet, and records them in the audit trail.
func (n *Node) addRevocations(ctx context.Context, p *peer, serials []string) error {
	if len(serials) == 0 || n.cfg.Revocations == nil {
		return nil
	}
	added, err := n.cfg.Revocations.Add(serials)
	if err != nil {
		return fmt.Errorf("add certificate revocations from %s: %w", p.Addr, err)
	}
	if len(added) == 0 {
		return nil
	}
	n.log.Info("mirror: certificate revocations received", "peer", p.ID, "serials", added)
	if !n.cfg.Audit {
		return nil
	}
	return n.cfg.Store.Update(ctx, func(tx *meta.Tx) error {
		return tx.AppendAudit(meta.AuditRecord{Kind: meta.AuditMirror, Actor: p.ID + " (" + p.Name + ")",
			Fingerprint: p.SPKI, RemoteAddr: p.Addr, Operation: "mirror certificate revocation", Status: "Success",
			Message: "client certificate serials now refused here: " + strings.Join(added, ", ")})
	})
}

func (n *Node) cursor(ctx context.Context, id string) (int64, error) {
	var cur int64
	err := n.cfg.Store.View(ctx, func(tx *meta.Tx) error {
		ps, err := tx.Peers()
		if err != nil {
			return err
		}
		for _, mp := range ps {
			if mp.ID == id {
				cur = mp.Cursor
				return nil
			}
		}
		return fmt.Errorf("peer %s: %w", id, meta.ErrNotFound)
	})
	if err != nil {
		return 0, fmt.Errorf("read cursor: %w", err)
	}
	return cur, nil
}

// apply merges p's entries into the store in one transaction, moving p's
// cursor to through with them when moveCursor. Material needed here (a new
// object) is rewrapped from the pair KEK to the master first, in the token.
func (n *Node) apply(ctx context.Context, p *peer, es []entry, through int64, moveCursor bool) error {
	ids := make([]string, len(es))
	for i, e := range es {
		if e.Object == nil || e.Object.ID == "" {
			return errors.New("entry without an object")
		}
		ids[i] = e.Object.ID
	}
	var have map[string]bool
	err := n.cfg.Store.View(ctx, func(tx *meta.Tx) (err error) {
		have, err = tx.HaveMaterial(ids)
		return err
	})
	if err != nil {
		return fmt.Errorf("read local objects: %w", err)
	}
	for _, e := range es {
		o := e.Object
		if o.KEK != pairMarker {
			continue // no material, or public material as it is
		}
		if have[o.ID] || isDestroyed(o.State) {
			o.Wrapped, o.KEK = nil, ""
			continue
		}
		master, err := n.masterLabel(ctx)
		if err != nil {
			return err
		}
		w, err := n.cfg.Keys.Rewrap(ctx, hsm.Wrapped{Blob: o.Wrapped, KEK: p.KEK}, hsm.KeyKind(e.Kind), master)
		if err != nil {
			return fmt.Errorf("rewrap object %s from peer %s: %w", o.ID, p.ID, err)
		}
		o.Wrapped, o.KEK = w.Blob, w.KEK
	}
	var altered, fresh []string
	err = n.cfg.Store.Update(ctx, func(tx *meta.Tx) error {
		altered, fresh = altered[:0], fresh[:0]
		for _, e := range es {
			id := e.Object.ID
			var lv *version
			local, err := tx.Get(id)
			switch {
			case errors.Is(err, meta.ErrNotFound):
			case err != nil:
				return err
			default:
				g, err := tx.Grants(id)
				if err != nil {
					return err
				}
				if local.AttrRevs, err = tx.AttrRevs(id); err != nil {
					return err
				}
				lv = &version{o: local, grants: g}
			}
			out, newLife, changed := merge(lv, version{o: e.Object, grants: e.Grants})
			if !changed {
				continue
			}
			if out.o.Wrapped == nil && !isDestroyed(out.o.State) {
				return fmt.Errorf("object %s arrived without its material", id)
			}
			if newLife {
				rev, err := tx.NewRev()
				if err != nil {
					return err
				}
				out.o.Rev.LifeClock, out.o.Rev.LifeOrigin = rev.Clock, rev.Origin
			}
			if _, err := tx.Apply(out.o, out.grants); err != nil {
				return err
			}
			altered = append(altered, id)
			if lv == nil {
				fresh = append(fresh, id)
			}
		}
		if len(altered) > 0 && n.cfg.Audit {
			// One record per applied page: which peer changed which objects.
			if err := tx.AppendAudit(meta.AuditRecord{Kind: meta.AuditMirror, Actor: p.ID + " (" + p.Name + ")",
				Fingerprint: p.SPKI, RemoteAddr: p.Addr, Operation: "mirror apply", ObjectIDs: slices.Clone(altered),
				Status: "Success", Message: fmt.Sprintf("%d of %d received changes applied", len(altered), len(es))}); err != nil {
				return err
			}
		}
		if moveCursor {
			return tx.SetCursor(p.ID, through)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, id := range altered {
		n.cfg.Keys.Forget(id)
		n.cfg.OnApply(id)
	}
	now := time.Now()
	for _, e := range es {
		if e.Object.Rev.Origin == p.ID && slices.Contains(fresh, e.Object.ID) {
			n.recordLag(p, now.Sub(meta.ClockTime(e.Object.Rev.Clock)))
		}
	}
	if len(altered) > 0 {
		n.log.Debug("mirror: applied changes", "peer", p.ID, "changed", len(altered), "received", len(es))
	}
	return nil
}

// antiEntropyLoop compares digests with p now and then and repairs what
// the stream missed (a restored database, a lost cursor).
func (n *Node) antiEntropyLoop(ctx context.Context, p *peer) {
	t := time.NewTimer(time.Duration(1000+rand.IntN(2000)) * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		repaired, err := n.reconcile(ctx, p)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			n.log.Debug("mirror: anti-entropy failed", "peer", p.ID, "err", err)
		case repaired > 0:
			n.log.Info("mirror: anti-entropy repaired objects", "peer", p.ID, "buckets", repaired)
		}
		t.Reset(n.cfg.AntiEntropy)
	}
}

// reconcile runs one anti-entropy exchange with p and returns how many
// buckets differed.
func (n *Node) reconcile(ctx context.Context, p *peer) (int, error) {
	c, err := dial(ctx, p.Addr, n.cfg.Cert, p.SPKI)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	if err := writeFrame(w, &frame{T: tDigests, From: n.self}); err != nil {
		return 0, err
	}
	f, err := readFrame(r)
	if err != nil {
		return 0, err
	}
	if f.T != tDigests || len(f.Digests) != buckets {
		return 0, fmt.Errorf("%w by %s: %s", ErrRefused, p.Addr, f.Error)
	}
	mine, _, err := n.digests(ctx)
	if err != nil {
		return 0, err
	}
	var diff []int
	for i := range mine {
		if mine[i] != f.Digests[i] {
			diff = append(diff, i)
		}
	}
	if len(diff) == 0 {
		return 0, nil
	}
	if err := writeFrame(w, &frame{T: tFetch, Buckets: diff}); err != nil {
		return 0, err
	}
	for {
		_ = c.SetDeadline(time.Now().Add(time.Minute))
		f, err := readFrame(r)
		if err != nil {
			return 0, err
		}
		if f.T != tChanges {
			return 0, fmt.Errorf("anti-entropy with %s: unexpected %q frame", p.Addr, f.T)
		}
		if f.Through == -1 {
			return len(diff), nil
		}
		if err := n.apply(ctx, p, f.Entries, 0, false); err != nil {
			return 0, err
		}
	}
}
