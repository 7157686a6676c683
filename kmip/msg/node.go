package msg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/gemalto/kmip-go/ttlv"
)

// TTLV item types (KMIP 1.x; DateTimeExtended is 2.0).
const (
	TypeStructure        = ttlv.TypeStructure
	TypeInteger          = ttlv.TypeInteger
	TypeLongInteger      = ttlv.TypeLongInteger
	TypeBigInteger       = ttlv.TypeBigInteger
	TypeEnumeration      = ttlv.TypeEnumeration
	TypeBoolean          = ttlv.TypeBoolean
	TypeTextString       = ttlv.TypeTextString
	TypeByteString       = ttlv.TypeByteString
	TypeDateTime         = ttlv.TypeDateTime
	TypeInterval         = ttlv.TypeInterval
	TypeDateTimeExtended = ttlv.TypeDateTimeExtended
)

// MaxDepth bounds structure nesting. Real KMIP messages nest fewer than 10 levels.
const MaxDepth = 32

// Node is one TTLV item. Scalars live in Int (Integer, Long Integer, Enumeration,
// Boolean as 0/1, Interval in seconds, Date-Time as Unix seconds, Date-Time Extended as
// Unix microseconds) or Bytes (Text String, Byte String, Big Integer two's complement);
// structures in Children. A union of fields instead of an interface keeps decoding free
// of per-value allocations.
type Node struct {
	Tag      ttlv.Tag
	Type     ttlv.Type
	Int      int64
	Bytes    []byte
	Children []*Node
}

// ErrMalformed is wrapped by every decoding error; the server answers it with
// Invalid Message.
var ErrMalformed = errors.New("msg: malformed TTLV")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// Decode parses exactly one TTLV item that must span all of b.
func Decode(b []byte) (*Node, error) {
	n, rest, err := decode(b, 0)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, malformed("%d trailing bytes after message", len(rest))
	}
	return n, nil
}

func padded(n int) int { return (n + 7) &^ 7 }

func decode(b []byte, depth int) (*Node, []byte, error) {
	if depth > MaxDepth {
		return nil, nil, malformed("nesting deeper than %d", MaxDepth)
	}
	if len(b) < 8 {
		return nil, nil, malformed("truncated item header (%d bytes)", len(b))
	}
	tag := ttlv.Tag(uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]))
	if b[0] != 0x42 && b[0] != 0x54 {
		return nil, nil, malformed("invalid tag %06x", uint32(tag))
	}
	typ := ttlv.Type(b[3])
	length := binary.BigEndian.Uint32(b[4:8])
	b = b[8:]
	if uint64(length) > uint64(len(b)) {
		return nil, nil, malformed("%v length %d exceeds the %d bytes left", tag, length, len(b))
	}
	n := &Node{Tag: tag, Type: typ}
	want := func(l uint32) error {
		if length != l {
			return malformed("%v: %v length %d, want %d", tag, typ, length, l)
		}
		return nil
	}
	var err error
	switch typ {
	case TypeStructure:
		if length%8 != 0 {
			return nil, nil, malformed("%v: structure length %d not a multiple of 8", tag, length)
		}
		body := b[:length]
		for len(body) > 0 {
			var c *Node
			c, body, err = decode(body, depth+1)
			if err != nil {
				return nil, nil, err
			}
			n.Children = append(n.Children, c)
		}
		return n, b[length:], nil
	case TypeInteger, TypeEnumeration, TypeInterval:
		if err = want(4); err == nil {
			v := binary.BigEndian.Uint32(b)
			if typ == TypeInteger {
				n.Int = int64(int32(v))
			} else {
				n.Int = int64(v)
			}
		}
	case TypeLongInteger, TypeDateTime, TypeDateTimeExtended:
		if err = want(8); err == nil {
			n.Int = int64(binary.BigEndian.Uint64(b))
		}
	case TypeBoolean:
		if err = want(8); err == nil {
			v := binary.BigEndian.Uint64(b)
			if v > 1 {
				err = malformed("%v: boolean value %d", tag, v)
			}
			n.Int = int64(v)
		}
	case TypeBigInteger:
		if length%8 != 0 || length == 0 {
			err = malformed("%v: big integer length %d", tag, length)
		}
		n.Bytes = b[:length:length]
	case TypeTextString, TypeByteString:
		n.Bytes = b[:length:length]
	default:
		err = malformed("%v: unknown item type %#x", tag, byte(typ))
	}
	if err != nil {
		return nil, nil, err
	}
	p := padded(int(length))
	if p > len(b) {
		return nil, nil, malformed("%v: value padding truncated", tag)
	}
	return n, b[p:], nil
}

// Append encodes n onto dst.
func (n *Node) Append(dst []byte) []byte {
	start := len(dst)
	dst = append(dst, byte(n.Tag>>16), byte(n.Tag>>8), byte(n.Tag), byte(n.Type), 0, 0, 0, 0)
	var length int
	switch n.Type {
	case TypeStructure:
		for _, c := range n.Children {
			dst = c.Append(dst)
		}
		length = len(dst) - start - 8
	case TypeInteger, TypeEnumeration, TypeInterval:
		dst = binary.BigEndian.AppendUint32(dst, uint32(n.Int))
		dst = append(dst, 0, 0, 0, 0)
		length = 4
	case TypeLongInteger, TypeDateTime, TypeDateTimeExtended, TypeBoolean:
		dst = binary.BigEndian.AppendUint64(dst, uint64(n.Int))
		length = 8
	default: // text, bytes, big integer
		dst = append(dst, n.Bytes...)
		length = len(n.Bytes)
		for i := length; i < padded(length); i++ {
			dst = append(dst, 0)
		}
	}
	binary.BigEndian.PutUint32(dst[start+4:], uint32(length))
	return dst
}

// Size is the encoded size of n in bytes.
func (n *Node) Size() int {
	if n.Type != TypeStructure {
		switch n.Type {
		case TypeTextString, TypeByteString, TypeBigInteger:
			return 8 + padded(len(n.Bytes))
		}
		return 16
	}
	s := 8
	for _, c := range n.Children {
		s += c.Size()
	}
	return s
}

// Child returns the first child with tag t, or nil. Nil-safe.
func (n *Node) Child(t ttlv.Tag) *Node {
	if n == nil {
		return nil
	}
	for _, c := range n.Children {
		if c.Tag == t {
			return c
		}
	}
	return nil
}

// All returns every child with tag t.
func (n *Node) All(t ttlv.Tag) []*Node {
	if n == nil {
		return nil
	}
	var out []*Node
	for _, c := range n.Children {
		if c.Tag == t {
			out = append(out, c)
		}
	}
	return out
}

// Text is the value of a Text String (or the bytes of a Byte String) as a string.
func (n *Node) Text() string { return string(n.Bytes) }

// Time is the value of a Date-Time.
func (n *Node) Time() time.Time { return time.Unix(n.Int, 0).UTC() }

// Big is the value of a Big Integer.
func (n *Node) Big() *big.Int {
	v := new(big.Int).SetBytes(n.Bytes)
	if len(n.Bytes) > 0 && n.Bytes[0]&0x80 != 0 {
		v.Sub(v, new(big.Int).Lsh(big.NewInt(1), uint(8*len(n.Bytes))))
	}
	return v
}

// Constructors for building replies.

// Struct builds a Structure; nil children are skipped so optional fields read naturally.
func Struct(t ttlv.Tag, children ...*Node) *Node {
	n := &Node{Tag: t, Type: TypeStructure, Children: make([]*Node, 0, len(children))}
	for _, c := range children {
		if c != nil {
			n.Children = append(n.Children, c)
		}
	}
	return n
}

// Int builds an Integer.
func Int(t ttlv.Tag, v int32) *Node { return &Node{Tag: t, Type: TypeInteger, Int: int64(v)} }

// Long builds a Long Integer.
func Long(t ttlv.Tag, v int64) *Node { return &Node{Tag: t, Type: TypeLongInteger, Int: v} }

// Enum builds an Enumeration.
func Enum(t ttlv.Tag, v uint32) *Node { return &Node{Tag: t, Type: TypeEnumeration, Int: int64(v)} }

// Bool builds a Boolean.
func Bool(t ttlv.Tag, v bool) *Node {
	n := &Node{Tag: t, Type: TypeBoolean}
	if v {
		n.Int = 1
	}
	return n
}

// Text builds a Text String.
func Text(t ttlv.Tag, v string) *Node { return &Node{Tag: t, Type: TypeTextString, Bytes: []byte(v)} }

// Bytes builds a Byte String.
func Bytes(t ttlv.Tag, v []byte) *Node { return &Node{Tag: t, Type: TypeByteString, Bytes: v} }

// Date builds a Date-Time (second precision, as KMIP 1.x defines it).
func Date(t ttlv.Tag, v time.Time) *Node { return &Node{Tag: t, Type: TypeDateTime, Int: v.Unix()} }

// Interval builds an Interval in seconds.
func Interval(t ttlv.Tag, seconds uint32) *Node {
	return &Node{Tag: t, Type: TypeInterval, Int: int64(seconds)}
}

// BigInt builds a Big Integer in minimal two's complement padded to 8 bytes.
func BigInt(t ttlv.Tag, v *big.Int) *Node {
	var b []byte
	if v.Sign() >= 0 {
		b = v.Bytes()
		if len(b) == 0 || b[0]&0x80 != 0 {
			b = append([]byte{0}, b...)
		}
		for len(b)%8 != 0 {
			b = append([]byte{0}, b...)
		}
	} else {
		l := (v.BitLen()/8 + 1 + 7) &^ 7
		m := new(big.Int).Add(v, new(big.Int).Lsh(big.NewInt(1), uint(8*l)))
		b = m.FillBytes(make([]byte, l))
	}
	return &Node{Tag: t, Type: TypeBigInteger, Bytes: b}
}

// Clone returns a deep copy, for values stored beyond the life of a request buffer.
func (n *Node) Clone() *Node {
	c := &Node{Tag: n.Tag, Type: n.Type, Int: n.Int}
	if n.Bytes != nil {
		c.Bytes = append([]byte(nil), n.Bytes...)
	}
	for _, ch := range n.Children {
		c.Children = append(c.Children, ch.Clone())
	}
	return c
}

// Equal reports whether two trees encode identically.
func (n *Node) Equal(o *Node) bool {
	if n == nil || o == nil {
		return n == o
	}
	if n.Tag != o.Tag || n.Type != o.Type || n.Int != o.Int || string(n.Bytes) != string(o.Bytes) || len(n.Children) != len(o.Children) {
		return false
	}
	for i := range n.Children {
		if !n.Children[i].Equal(o.Children[i]) {
			return false
		}
	}
	return true
}
