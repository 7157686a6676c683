package backup

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/meta"
)

// Magic starts every backup file; Version is the layout this package writes
// and the only one it reads.
const (
	Magic   = "HSMKMSBK"
	Version = 1
)

// Frame kinds.
const (
	frameHeader = 'H'
	frameObject = 'O'
	frameEnd    = 'E'
	frameSeal   = 'S'
)

// Frame size limits: far above real content, low enough that a corrupt
// length cannot make a reader allocate much.
const (
	maxHeader = 1 << 20
	maxObject = 1 << 20
	maxEnd    = 4 << 10
	sealSize  = sha256.Size
)

// sealContext separates the seal's input from any other use of the key.
const sealContext = "hsmkms backup seal v1\x00"

// Header describes a backup file; it is the first frame.
type Header struct {
	ApplianceID string    `json:"appliance_id"`
	Created     time.Time `json:"created"`
	Software    string    `json:"software,omitempty"`
	// BackupKEK names the pair that wraps the material and seals the file.
	BackupKEK KEKInfo `json:"backup_kek"`
	Objects   int     `json:"objects"`
	Counts    []Count `json:"counts"`
}

// KEKInfo names a backup KEK pair: the fingerprint is the same on every
// token holding it; the label is the one it had where the backup was made.
type KEKInfo struct {
	Fingerprint string `json:"fingerprint"`
	Label       string `json:"label"`
}

// Count is the number of objects of one type in one state. The names are
// for people; the numbers are KMIP enumeration values.
type Count struct {
	Type      uint32 `json:"type"`
	TypeName  string `json:"type_name"`
	State     uint32 `json:"state"`
	StateName string `json:"state_name"`
	Count     int    `json:"count"`
}

// end is the last JSON frame; it repeats the count so that a file cut
// exactly between two objects is still seen as truncated.
type end struct {
	Objects int `json:"objects"`
}

// Record is one managed object in a backup file: every field meta stores,
// its attributes and grants, and its material: secret material wrapped
// under the backup KEK (Material), or material that is not secret and was
// stored unwrapped, such as a public key (Clear). Neither is present once
// the object is destroyed.
type Record struct {
	ID                   string    `json:"id"`
	Type                 uint32    `json:"type"`
	State                uint32    `json:"state"`
	Owner                string    `json:"owner"`
	Algorithm            uint32    `json:"algorithm"`
	Length               int32     `json:"length"`
	UsageMask            int32     `json:"usage_mask"`
	Format               uint32    `json:"format"`
	SecretType           uint32    `json:"secret_type"`
	Material             []byte    `json:"material,omitempty"`
	Clear                []byte    `json:"clear,omitempty"`
	Created              time.Time `json:"created"`
	Updated              time.Time `json:"updated"`
	Activation           time.Time `json:"activation"`
	Deactivation         time.Time `json:"deactivation"`
	Destroyed            time.Time `json:"destroyed"`
	Compromise           time.Time `json:"compromise"`
	CompromiseOccurrence time.Time `json:"compromise_occurrence"`
	RevocationReason     uint32    `json:"revocation_reason"`
	RevocationMessage    string    `json:"revocation_message"`
	Attrs                []Attr    `json:"attrs"`
	Grants               []string  `json:"grants"`
}

// Attr is one generic attribute instance; Value is its TTLV encoding.
type Attr struct {
	Name  string `json:"name"`
	Index int    `json:"index"`
	Value []byte `json:"value"`
}

// recordOf copies o (material excluded) and its grants into a Record.
func recordOf(o *meta.Object, grants []string) *Record {
	r := &Record{
		ID: o.ID, Type: o.Type, State: o.State, Owner: o.Owner, Algorithm: o.Algorithm,
		Length: o.Length, UsageMask: o.UsageMask, Format: o.Format, SecretType: o.SecretType,
		Created: o.Created, Updated: o.Updated, Activation: o.Activation,
		Deactivation: o.Deactivation, Destroyed: o.Destroyed, Compromise: o.Compromise,
		CompromiseOccurrence: o.CompromiseOccurrence, RevocationReason: o.RevocationReason,
		RevocationMessage: o.RevocationMessage, Attrs: make([]Attr, len(o.Attrs)), Grants: grants,
	}
	for i, a := range o.Attrs {
		r.Attrs[i] = Attr(a)
	}
	if r.Grants == nil {
		r.Grants = []string{}
	}
	return r
}

// object returns r as a meta object with wrapped material w (nil: none, or
// r's clear material).
func (r *Record) object(w *hsm.Wrapped) *meta.Object {
	o := &meta.Object{
		ID: r.ID, Type: r.Type, State: r.State, Owner: r.Owner, Algorithm: r.Algorithm,
		Length: r.Length, UsageMask: r.UsageMask, Format: r.Format, SecretType: r.SecretType,
		Created: r.Created, Updated: r.Updated, Activation: r.Activation,
		Deactivation: r.Deactivation, Destroyed: r.Destroyed, Compromise: r.Compromise,
		CompromiseOccurrence: r.CompromiseOccurrence, RevocationReason: r.RevocationReason,
		RevocationMessage: r.RevocationMessage, Attrs: make([]meta.Attr, len(r.Attrs)),
	}
	for i, a := range r.Attrs {
		o.Attrs[i] = meta.Attr(a)
	}
	switch {
	case w != nil:
		o.Wrapped, o.KEK = w.Blob, w.KEK
	case r.Clear != nil:
		o.Wrapped = r.Clear
	}
	return o
}

// check rejects records a restore could not store faithfully.
func (r *Record) check() error {
	if r.ID == "" {
		return errors.New("object without id")
	}
	if n := len(r.Material); n != 0 && (n < 16 || n%8 != 0) {
		return fmt.Errorf("object %q: material of %d bytes", r.ID, n)
	}
	if r.Material != nil && r.Clear != nil {
		return fmt.Errorf("object %q: both wrapped and clear material", r.ID)
	}
	return nil
}

// kindOf tells Rewrap what a blob unwraps to. Only the object class
// matters: a private key must unwrap as one, while every other value (AES,
// HMAC, 3DES, secret data) is a secret-key value that a generic secret
// carries exactly (see hsm.Token.Rewrap). So the rule does not depend on how
// kmip/ops tells symmetric kinds apart.
func kindOf(typ, alg uint32) hsm.KeyKind {
	if kmip14.ObjectType(typ) != kmip14.ObjectTypePrivateKey {
		return hsm.KindSecret
	}
	if kmip14.CryptographicAlgorithm(alg) == kmip14.CryptographicAlgorithmRSA {
		return hsm.KindRSA
	}
	return hsm.KindEC
}

// countsOf names a census.
func countsOf(census []meta.Census) (counts []Count, total int) {
	for _, c := range census {
		counts = append(counts, Count{Type: c.Type, TypeName: kmip14.ObjectType(c.Type).String(),
			State: c.State, StateName: kmip14.State(c.State).String(), Count: c.Count})
		total += c.Count
	}
	return counts, total
}

// sealInput is what the token MACs: a context string and the digest of the
// file up to the seal frame.
func sealInput(digest []byte) []byte {
	return append([]byte(sealContext), digest...)
}

// writer writes frames and hashes everything it writes.
type writer struct {
	w   *bufio.Writer
	sum hash.Hash
}

func newWriter(w io.Writer) *writer {
	fw := &writer{sum: sha256.New()}
	fw.w = bufio.NewWriterSize(io.MultiWriter(w, fw.sum), 64<<10)
	return fw
}

func (fw *writer) start() error {
	var v [2]byte
	binary.BigEndian.PutUint16(v[:], Version)
	if _, err := fw.w.WriteString(Magic); err != nil {
		return err
	}
	_, err := fw.w.Write(v[:])
	return err
}

func (fw *writer) frame(kind byte, payload []byte) error {
	var h [5]byte
	h[0] = kind
	binary.BigEndian.PutUint32(h[1:], uint32(len(payload)))
	if _, err := fw.w.Write(h[:]); err != nil {
		return err
	}
	_, err := fw.w.Write(payload)
	return err
}

func (fw *writer) json(kind byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return fw.frame(kind, b)
}

// digest flushes and returns the hash of everything written so far.
func (fw *writer) digest() ([]byte, error) {
	if err := fw.w.Flush(); err != nil {
		return nil, err
	}
	return fw.sum.Sum(nil), nil
}

// scanned is what one pass over a file found.
type scanned struct {
	header  Header
	objects int
	digest  []byte // SHA-256 of the file up to the seal frame
	seal    []byte
}

// frameReader reads frames and hashes exactly the bytes it consumed.
type frameReader struct {
	br  *bufio.Reader
	sum hash.Hash
}

// read returns the next frame. Lengths are checked against the kind's limit
// before anything is allocated.
func (fr *frameReader) read() (kind byte, payload []byte, err error) {
	var h [5]byte
	if _, err := io.ReadFull(fr.br, h[:]); err != nil {
		return 0, nil, fmt.Errorf("%w: truncated (frame header: %v)", ErrFormat, err)
	}
	kind, n := h[0], binary.BigEndian.Uint32(h[1:])
	var limit uint32
	switch kind {
	case frameHeader:
		limit = maxHeader
	case frameObject:
		limit = maxObject
	case frameEnd:
		limit = maxEnd
	case frameSeal:
		limit = sealSize
	default:
		return 0, nil, fmt.Errorf("%w: unknown frame kind %#x", ErrFormat, kind)
	}
	if n > limit {
		return 0, nil, fmt.Errorf("%w: %q frame of %d bytes (at most %d)", ErrFormat, kind, n, limit)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(fr.br, payload); err != nil {
		return 0, nil, fmt.Errorf("%w: truncated (%q frame: %v)", ErrFormat, kind, err)
	}
	if kind != frameSeal {
		fr.sum.Write(h[:])
		fr.sum.Write(payload)
	}
	return kind, payload, nil
}

// strictJSON decodes exactly one JSON value with no unknown fields.
func strictJSON(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("data after the JSON value")
	}
	return nil
}

// check validates the header on its own.
func (h *Header) check() error {
	if len(h.BackupKEK.Fingerprint) != 32 {
		return fmt.Errorf("backup KEK fingerprint %q is not 32 hex digits", h.BackupKEK.Fingerprint)
	}
	if _, err := hex.DecodeString(h.BackupKEK.Fingerprint); err != nil {
		return fmt.Errorf("backup KEK fingerprint %q is not hex", h.BackupKEK.Fingerprint)
	}
	total := 0
	for _, c := range h.Counts {
		if c.Count < 0 {
			return fmt.Errorf("negative count %d", c.Count)
		}
		total += c.Count
	}
	if h.Objects < 0 || total != h.Objects {
		return fmt.Errorf("counts add up to %d, objects is %d", total, h.Objects)
	}
	return nil
}

// scan reads a whole backup file, checking its structure, and calls fn for
// each object with the raw bytes of its frame. It returns ErrFormat (wrapped
// with the reason) for anything but a complete, well-formed file; the seal
// is returned, not checked.
func scan(r io.Reader, fn func(rec *Record, raw []byte) error) (*scanned, error) {
	fr := &frameReader{br: bufio.NewReaderSize(r, 64<<10), sum: sha256.New()}
	var pre [len(Magic) + 2]byte
	if _, err := io.ReadFull(fr.br, pre[:]); err != nil {
		return nil, fmt.Errorf("%w: shorter than the %d-byte preamble (not a backup file)", ErrFormat, len(pre))
	}
	fr.sum.Write(pre[:])
	if string(pre[:len(Magic)]) != Magic {
		return nil, fmt.Errorf("%w: no %q magic (not a backup file)", ErrFormat, Magic)
	}
	if v := binary.BigEndian.Uint16(pre[len(Magic):]); v != Version {
		return nil, fmt.Errorf("%w: format version %d (this hsmkms reads version %d)", ErrFormat, v, Version)
	}
	s := &scanned{}
	kind, payload, err := fr.read()
	if err != nil {
		return nil, err
	}
	if kind != frameHeader {
		return nil, fmt.Errorf("%w: first frame is %q, want the header", ErrFormat, kind)
	}
	if err := strictJSON(payload, &s.header); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrFormat, err)
	}
	if err := s.header.check(); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrFormat, err)
	}
	for {
		kind, payload, err := fr.read()
		if err != nil {
			return nil, err
		}
		if kind == frameEnd {
			var e end
			if err := strictJSON(payload, &e); err != nil {
				return nil, fmt.Errorf("%w: end frame: %v", ErrFormat, err)
			}
			if e.Objects != s.objects || s.objects != s.header.Objects {
				return nil, fmt.Errorf("%w: %d objects read, header says %d, end says %d", ErrFormat, s.objects, s.header.Objects, e.Objects)
			}
			break
		}
		if kind != frameObject {
			return nil, fmt.Errorf("%w: frame %q after object %d", ErrFormat, kind, s.objects)
		}
		s.objects++
		if s.objects > s.header.Objects {
			return nil, fmt.Errorf("%w: more objects than the %d the header announces", ErrFormat, s.header.Objects)
		}
		var rec Record
		if err := strictJSON(payload, &rec); err != nil {
			return nil, fmt.Errorf("%w: object %d: %v", ErrFormat, s.objects, err)
		}
		if err := rec.check(); err != nil {
			return nil, fmt.Errorf("%w: object %d: %v", ErrFormat, s.objects, err)
		}
		if fn != nil {
			if err := fn(&rec, payload); err != nil {
				return nil, err
			}
		}
	}
	s.digest = fr.sum.Sum(nil)
	kind, payload, err = fr.read()
	if err != nil {
		return nil, err
	}
	if kind != frameSeal || len(payload) != sealSize {
		return nil, fmt.Errorf("%w: the last frame is not a %d-byte seal", ErrFormat, sealSize)
	}
	s.seal = payload
	if _, err := fr.br.ReadByte(); err != io.EOF {
		return nil, fmt.Errorf("%w: bytes after the seal", ErrFormat)
	}
	return s, nil
}
