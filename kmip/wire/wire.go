package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/gemalto/kmip-go/ttlv"
)

// HeaderSize is the size of a TTLV item header: tag (3), type (1), length (4).
const HeaderSize = 8

// ErrTooLarge is wrapped by *TooLargeError.
var ErrTooLarge = errors.New("wire: message too large")

// ErrNotStructure is returned for a message whose outermost item is not a Structure.
// The item, padding included, has been consumed, so the stream is still in sync.
var ErrNotStructure = errors.New("wire: message is not a structure")

// TooLargeError reports a message longer than the limit (for a primitive outermost item,
// its length padded to 8). Nothing of its body has been read: the caller may Discard
// Length-HeaderSize bytes to resync, or close.
type TooLargeError struct {
	Length int // whole message, header included
	Limit  int
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("wire: message of %d bytes exceeds the limit of %d", e.Length, e.Limit)
}

// Unwrap makes errors.Is(err, ErrTooLarge) hold.
func (e *TooLargeError) Unwrap() error { return ErrTooLarge }

// ReadMessage reads one TTLV message of at most max bytes, header included, and returns
// it whole. It returns io.EOF only when r ended before the first byte, and
// io.ErrUnexpectedEOF when it ended inside the message.
func ReadMessage(r io.Reader, max int) ([]byte, error) {
	var hdr [HeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("read message header: %w", err)
	}
	typ := ttlv.Type(hdr[3])
	// uint64 arithmetic: a length near 4 GiB must not wrap on 32-bit platforms.
	body := uint64(binary.BigEndian.Uint32(hdr[4:]))
	if typ != ttlv.TypeStructure {
		// A primitive's value is padded to 8 bytes beyond its length; a structure's
		// length already covers its padded children.
		body = (body + 7) &^ 7
	}
	total := HeaderSize + body
	if total > uint64(max) {
		return nil, &TooLargeError{Length: int(min(total, uint64(^uint(0)>>1))), Limit: max}
	}
	if typ != ttlv.TypeStructure {
		if err := Discard(r, int64(body)); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w (type %#x)", ErrNotStructure, byte(typ))
	}
	b := make([]byte, total)
	copy(b, hdr[:])
	if _, err := io.ReadFull(r, b[HeaderSize:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read message body: %w", err)
	}
	return b, nil
}

// Discard reads and drops n bytes from r, through a small fixed buffer.
func Discard(r io.Reader, n int64) error {
	got, err := io.CopyN(io.Discard, r, n)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("discard %d bytes: %w", n-got, err)
	}
	return nil
}
