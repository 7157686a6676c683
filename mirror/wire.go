package mirror

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"

	"github.com/hsmkms/hsmkms/meta"
)

// maxFrame bounds one frame: a page of journal entries with their attributes.
const maxFrame = 16 << 20

// Frame types. A connection starts with join, pull or digests from the
// dialling side (see server.go for the conversations).
const (
	tJoin    = "join"    // pairing: the joiner's identity and proof
	tJoined  = "joined"  // pairing: the inviter's identity, proof and KEK check
	tPull    = "pull"    // stream me your journal after Cursor
	tChanges = "changes" // journal entries through position Through (none: a heartbeat)
	tAck     = "ack"     // entries through Pos are durably applied here
	tNack    = "nack"    // applying failed here: Error says why (disk full, token)
	tDigests = "digests" // anti-entropy: bucket digests please / here they are
	tFetch   = "fetch"   // anti-entropy: send every object in Buckets
	tError   = "error"   // the other side refuses: Error says why
)

// frame is every message; unused fields stay empty.
type frame struct {
	T       string   `json:"t"`
	From    string   `json:"from,omitempty"` // sender's appliance id
	Name    string   `json:"name,omitempty"`
	Addr    string   `json:"addr,omitempty"`
	Pub     []byte   `json:"pub,omitempty"`   // ECDH public key
	Proof   []byte   `json:"proof,omitempty"` // pairing HMAC
	Check   []byte   `json:"check,omitempty"` // pair KEK check value
	CA      []byte   `json:"ca,omitempty"`    // the sender's client CA (PEM)
	Cursor  int64    `json:"cursor,omitempty"`
	Through int64    `json:"through,omitempty"`
	Pos     int64    `json:"pos,omitempty"`
	Entries []entry  `json:"entries,omitempty"`
	Digests []string `json:"digests,omitempty"`
	Buckets []int    `json:"buckets,omitempty"`
	Error   string   `json:"error,omitempty"`
	// Revoked lists the client certificate serials the sender refuses; it
	// rides on stream frames when the sender's list changed (a union: a
	// revocation is never taken back by a peer).
	Revoked []string `json:"revoked,omitempty"`
}

// entry is a journal entry on the wire: the object's metadata and grants
// and, when it has material, the blob rewrapped under the pair KEK (the
// sender's local KEK label never travels) and the token key kind to unwrap it as.
type entry struct {
	Object *meta.Object `json:"o"`
	Grants []string     `json:"g,omitempty"`
	Kind   int          `json:"k,omitempty"`
}

func writeFrame(w *bufio.Writer, f *frame) error {
	b, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("encode %s frame: %w", f.T, err)
	}
	if len(b) > maxFrame {
		return fmt.Errorf("encode %s frame: %d bytes exceed %d", f.T, len(b), maxFrame)
	}
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(b)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return err
	}
	return w.Flush()
}

func readFrame(r *bufio.Reader) (*frame, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > maxFrame {
		return nil, fmt.Errorf("frame of %d bytes exceeds %d", n, maxFrame)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("decode frame: %w", err)
	}
	return &f, nil
}
