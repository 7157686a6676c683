package wire_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/hsmkms/hsmkms/kmip/wire"
)

// frame builds an item header of the given type and declared length followed by body.
func frame(typ byte, length uint32, body []byte) []byte {
	b := []byte{0x42, 0x00, 0x78, typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[4:], length)
	return append(b, body...)
}

func TestReadMessage(t *testing.T) {
	t.Parallel()
	body := bytes.Repeat([]byte{0xAB}, 16)
	good := frame(0x01, 16, body)
	next := frame(0x01, 0, nil)
	tests := []struct {
		name    string
		in      []byte
		max     int
		want    []byte
		wantErr error
		tooBig  *wire.TooLargeError
		rest    []byte // what must remain unread on the stream
	}{
		{name: "good", in: good, max: 64, want: good},
		{name: "exactly the limit", in: good, max: len(good), want: good},
		{name: "followed by another", in: append(append([]byte{}, good...), next...), max: 64, want: good, rest: next},
		{name: "empty structure", in: next, max: 8, want: next},
		{name: "clean end", in: nil, max: 64, wantErr: io.EOF},
		{name: "truncated header", in: good[:5], max: 64, wantErr: io.ErrUnexpectedEOF},
		{name: "truncated body", in: good[:20], max: 64, wantErr: io.ErrUnexpectedEOF},
		{name: "one byte over", in: good, max: len(good) - 1, wantErr: wire.ErrTooLarge,
			tooBig: &wire.TooLargeError{Length: 24, Limit: 23}, rest: body},
		{name: "huge length", in: frame(0x01, 0xFFFFFFF8, nil), max: 1 << 20, wantErr: wire.ErrTooLarge,
			tooBig: &wire.TooLargeError{Length: 8 + 0xFFFFFFF8, Limit: 1 << 20}},
		{name: "integer type", in: append(frame(0x02, 8, make([]byte, 8)), next...), max: 64,
			wantErr: wire.ErrNotStructure, rest: next},
		{name: "text type truncated", in: frame(0x07, 8, []byte("abc")), max: 64, wantErr: io.ErrUnexpectedEOF},
		{name: "text type padding consumed", in: append(frame(0x07, 5, []byte("hello\x00\x00\x00")), next...), max: 64,
			wantErr: wire.ErrNotStructure, rest: next},
		{name: "text type padding counts toward limit", in: frame(0x07, 5, []byte("hello\x00\x00\x00")), max: 15,
			wantErr: wire.ErrTooLarge, tooBig: &wire.TooLargeError{Length: 16, Limit: 15}},
		{name: "oversize wins over type", in: frame(0x07, 100, nil), max: 64, wantErr: wire.ErrTooLarge,
			tooBig: &wire.TooLargeError{Length: 112, Limit: 64}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := bytes.NewReader(tt.in)
			got, err := wire.ReadMessage(r, tt.max)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == io.EOF && err != io.EOF {
				t.Fatalf("clean end must be io.EOF itself, got %#v", err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("message = %x, want %x", got, tt.want)
			}
			if tt.tooBig != nil {
				var tl *wire.TooLargeError
				if !errors.As(err, &tl) || *tl != *tt.tooBig {
					t.Fatalf("err = %#v, want %#v", err, tt.tooBig)
				}
			}
			if tt.rest != nil {
				rest, _ := io.ReadAll(r)
				if !bytes.Equal(rest, tt.rest) {
					t.Fatalf("left on stream %x, want %x", rest, tt.rest)
				}
			}
		})
	}
}

func TestDiscard(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		n       int64
		rest    string
		wantErr error
	}{
		{name: "part", in: "abcdef", n: 4, rest: "ef"},
		{name: "all", in: "abcdef", n: 6},
		{name: "short stream", in: "abc", n: 4, wantErr: io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := bytes.NewReader([]byte(tt.in))
			if err := wire.Discard(r, tt.n); !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if rest, _ := io.ReadAll(r); string(rest) != tt.rest {
				t.Fatalf("rest = %q, want %q", rest, tt.rest)
			}
		})
	}
}

func TestOversizeThenResync(t *testing.T) {
	t.Parallel()
	big := frame(0x01, 64, make([]byte, 64))
	small := frame(0x01, 0, nil)
	r := bytes.NewReader(append(big, small...))
	_, err := wire.ReadMessage(r, 32)
	var tl *wire.TooLargeError
	if !errors.As(err, &tl) {
		t.Fatalf("err = %v, want TooLargeError", err)
	}
	if err := wire.Discard(r, int64(tl.Length-wire.HeaderSize)); err != nil {
		t.Fatal(err)
	}
	got, err := wire.ReadMessage(r, 32)
	if err != nil || !bytes.Equal(got, small) {
		t.Fatalf("after resync: %x, %v", got, err)
	}
}

func FuzzReadMessage(f *testing.F) {
	f.Add(frame(0x01, 16, make([]byte, 16)), 64)
	f.Add(frame(0x01, 0xFFFFFFF8, nil), 1<<20)
	f.Add(frame(0x02, 8, make([]byte, 8)), 64)
	f.Add([]byte{0x42, 0x00}, 64)
	f.Fuzz(func(t *testing.T, in []byte, max int) {
		if max < 0 {
			max = -max
		}
		max %= 1 << 20
		r := bytes.NewReader(in)
		for {
			b, err := wire.ReadMessage(r, max)
			if err != nil {
				var tl *wire.TooLargeError
				if errors.As(err, &tl) && tl.Length <= max {
					t.Fatalf("too large error for %d bytes under limit %d", tl.Length, max)
				}
				if errors.Is(err, wire.ErrNotStructure) {
					continue
				}
				return
			}
			if cap(b) > max {
				t.Fatalf("allocated %d bytes over the limit %d", cap(b), max)
			}
			if got := int(binary.BigEndian.Uint32(b[4:8])) + wire.HeaderSize; got != len(b) || b[3] != 0x01 {
				t.Fatalf("message %x does not match its header", b)
			}
		}
	})
}
