package meta

import (
	"bytes"
	"context"
	"fmt"
)

// AuditProblem names how a trail that fails verification was tampered with,
// as far as the chain can tell.
type AuditProblem string

// Problems VerifyAudit reports.
const (
	// AuditModified: the record's content or MAC changed (or, for the last
	// record, a forged one was appended: the two look alike).
	AuditModified AuditProblem = "modified"
	// AuditDeleted: records are missing (a gap in seq, or later records
	// renumbered to close it).
	AuditDeleted AuditProblem = "deleted"
	// AuditInserted: forged records were inserted and later ones renumbered.
	AuditInserted AuditProblem = "inserted"
	// AuditReordered: two records swapped places or contents.
	AuditReordered AuditProblem = "reordered"
	// AuditAnchorForged: the checkpoint left by pruning does not verify.
	AuditAnchorForged AuditProblem = "anchor forged"
)

// AuditVerdict is the result of VerifyAudit. When OK is false, BadSeq is the
// first position where the chain breaks and Problem and Detail say why.
type AuditVerdict struct {
	OK       bool
	Anchor   int64 // seq of the anchor the chain started from (0: never pruned)
	Count    int64 // records verified before the first bad one (all when OK)
	FirstSeq int64 // first verified record (0 if none)
	LastSeq  int64 // last verified record (0 if none)
	BadSeq   int64
	Problem  AuditProblem
	Detail   string
}

// verifyPage is how many records VerifyAudit reads per read transaction, and
// searchWindow how many following records it examines to tell a reordering
// or insertion from a modification.
const (
	verifyPage   = 1000
	searchWindow = 10000
	maxShift     = 8
)

// VerifyAudit recomputes the chain from the anchor to the newest record with
// the Store's Chainer. It reads in pages of short read transactions, so it
// can run while the server appends. An error means the check could not run
// (the token or the database failed), not that the trail is bad.
//
// Deleting the newest records leaves a valid, shorter chain: compare Count
// and LastSeq with what a SIEM received to detect that.
func (s *Store) VerifyAudit(ctx context.Context) (AuditVerdict, error) {
	if s.audit == nil {
		return AuditVerdict{}, fmt.Errorf("verify audit trail: %w", ErrAuditDisabled)
	}
	var v AuditVerdict
	var anchor AuditAnchor
	var stray []AuditRecord
	err := s.View(ctx, func(tx *Tx) (err error) {
		if anchor, err = tx.AuditAnchor(); err != nil {
			return err
		}
		stray, err = tx.auditUpTo(anchor.Seq)
		return err
	})
	if err != nil {
		return v, fmt.Errorf("verify audit trail: %w", err)
	}
	v.Anchor = anchor.Seq
	if anchor.Tag != nil {
		ok, err := macEquals(s.audit, anchor.MAC, anchor.canonical(), anchor.Tag)
		if err != nil {
			return v, fmt.Errorf("verify audit trail: %w", err)
		}
		if !ok {
			v.BadSeq, v.Problem = anchor.Seq, AuditAnchorForged
			v.Detail = fmt.Sprintf("the anchor at seq %d was not written by a prune (records before it may have been deleted)", anchor.Seq)
			return v, nil
		}
	}
	if len(stray) > 0 {
		v.BadSeq, v.Problem = stray[0].Seq, AuditInserted
		v.Detail = fmt.Sprintf("record %d lies at or before the anchor (seq %d), where pruning left nothing", stray[0].Seq, anchor.Seq)
		return v, nil
	}
	prevSeq, prev := anchor.Seq, anchor.MAC
	for {
		var page []AuditRecord
		if err := s.View(ctx, func(tx *Tx) (err error) {
			page, err = tx.AuditRange(prevSeq, verifyPage)
			return err
		}); err != nil {
			return v, fmt.Errorf("verify audit trail: %w", err)
		}
		if len(page) == 0 {
			v.OK = true
			return v, nil
		}
		for i := range page {
			r := &page[i]
			if r.Seq != prevSeq+1 {
				v.BadSeq, v.Problem = prevSeq+1, AuditDeleted
				v.Detail = fmt.Sprintf("records %d to %d are missing (the next present record is %d)", prevSeq+1, r.Seq-1, r.Seq)
				return v, nil
			}
			ok, err := verifyMAC(s.audit, prev, r)
			if err != nil {
				return v, fmt.Errorf("verify audit record %d: %w", r.Seq, err)
			}
			if !ok {
				v.BadSeq = r.Seq
				v.Problem, v.Detail, err = s.diagnose(ctx, prev, r)
				if err != nil {
					return v, fmt.Errorf("verify audit record %d: %w", r.Seq, err)
				}
				return v, nil
			}
			if v.FirstSeq == 0 {
				v.FirstSeq = r.Seq
			}
			v.Count++
			v.LastSeq = r.Seq
			prevSeq, prev = r.Seq, r.MAC
		}
	}
}

// auditUpTo returns records with seq at or below seq (there should be none).
func (tx *Tx) auditUpTo(seq int64) ([]AuditRecord, error) {
	rows, err := tx.q.QueryContext(tx.ctx, `SELECT `+auditCols+` FROM audit WHERE seq <= ? ORDER BY seq LIMIT 1`, seq)
	if err != nil {
		return nil, fmt.Errorf("read audit records up to %d: %w", seq, tx.dbErr(err))
	}
	defer rows.Close()
	var out []AuditRecord
	for rows.Next() {
		r, err := scanAudit(rows)
		if err != nil {
			return nil, fmt.Errorf("read audit records up to %d: %w", seq, tx.dbErr(err))
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read audit records up to %d: %w", seq, tx.dbErr(err))
	}
	return out, nil
}

// diagnose explains why bad, the record at the position after prev, fails
// to verify, by testing the genuine record for that position against the
// records that follow:
//   - a later record j verifies at bad's position: if bad verifies at j's
//     position the two were swapped (reordered), else the records from bad
//     up to j are forgeries and the rest were renumbered (inserted);
//   - a later record's content verifies with bad's MAC: contents were
//     swapped and MACs left in place (reordered);
//   - the next record chains from bad's stored MAC: bad's content was
//     changed (modified);
//   - the next record chains from bad's MAC at a higher seq: records before
//     bad were deleted and the rest renumbered (deleted);
//   - otherwise bad was modified, MAC and all.
func (s *Store) diagnose(ctx context.Context, prev []byte, bad *AuditRecord) (AuditProblem, string, error) {
	var next []AuditRecord
	if err := s.View(ctx, func(tx *Tx) (err error) {
		next, err = tx.AuditRange(bad.Seq, searchWindow)
		return err
	}); err != nil {
		return "", "", err
	}
	pos := bad.Seq
	for j := range next {
		r := next[j]
		at := r
		at.Seq = pos
		m, err := chainMAC(s.audit, prev, at.canonical())
		if err != nil {
			return "", "", err
		}
		switch {
		case bytes.Equal(m, r.MAC):
			// r is the genuine record for pos. Did bad come from r's place?
			// Adjacent records: bad's original predecessor is r itself.
			before := r.MAC
			if j > 0 {
				before = next[j-1].MAC
			}
			moved := *bad
			moved.Seq = r.Seq
			swapped, err := verifyMAC(s.audit, before, &moved)
			if err != nil {
				return "", "", err
			}
			if swapped {
				return AuditReordered, fmt.Sprintf("records %d and %d swapped places", pos, r.Seq), nil
			}
			return AuditInserted, fmt.Sprintf("records %d to %d are not genuine; the record that belongs at %d is now at %d (later records renumbered)",
				pos, r.Seq-1, pos, r.Seq), nil
		case bytes.Equal(m, bad.MAC):
			return AuditReordered, fmt.Sprintf("the contents of records %d and %d were swapped", pos, r.Seq), nil
		}
	}
	if len(next) == 0 {
		return AuditModified, fmt.Sprintf("record %d, the newest, does not verify: it was modified, or forged and appended", pos), nil
	}
	n := next[0]
	if n.Seq == pos+1 {
		ok, err := verifyMAC(s.audit, bad.MAC, &n)
		if err != nil {
			return "", "", err
		}
		if ok {
			return AuditModified, fmt.Sprintf("the content of record %d was changed", pos), nil
		}
	}
	for d := int64(1); d <= maxShift; d++ {
		shifted := n
		shifted.Seq = n.Seq + d
		ok, err := verifyMAC(s.audit, bad.MAC, &shifted)
		if err != nil {
			return "", "", err
		}
		if ok {
			return AuditDeleted, fmt.Sprintf("%d record(s) before record %d were deleted and the later records renumbered", d, pos), nil
		}
	}
	return AuditModified, fmt.Sprintf("record %d was modified, MAC included (the chain breaks there)", pos), nil
}

// macEquals reports whether want is the MAC of record after prev.
func macEquals(c Chainer, prev, record, want []byte) (bool, error) {
	m, err := chainMAC(c, prev, record)
	if err != nil {
		return false, err
	}
	return bytes.Equal(m, want), nil
}
