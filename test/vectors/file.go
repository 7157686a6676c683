package vectors

import (
	"bytes"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gemalto/kmip-go/ttlv"

	"github.com/hsmkms/hsmkms/kmip/msg"
)

// Conversation is one vector file.
type Conversation struct {
	Name  string // base name, the key of a skip list
	Path  string
	Steps []Step
}

// Step is a request and the response expected for it, as parsed XML.
type Step struct {
	Line     int // line of the RequestMessage in the file
	Request  *XNode
	Response *XNode
}

// XNode is one XML element of the KMIP XML encoding: the element name is the tag, the
// type and value attributes the TTLV type and value (no type means Structure).
type XNode struct {
	XMLName  xml.Name
	Tag      string   `xml:"tag,attr,omitempty"`
	Type     string   `xml:"type,attr,omitempty"`
	Value    string   `xml:"value,attr,omitempty"`
	Children []*XNode `xml:",any"`

	// Raw is the value as written in the file, before placeholders were bound.
	Raw string `xml:"-"`
}

// Load reads and parses a conversation file.
func Load(path string) (*Conversation, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load vector %s: %w", path, err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("load vector %s: %w", path, err)
	}
	c.Name, c.Path = filepath.Base(path), path
	return c, nil
}

// Parse parses the text of a conversation file.
func Parse(data []byte) (*Conversation, error) {
	d := xml.NewDecoder(bytes.NewReader(data))
	c := &Conversation{}
	depth := 0
	var pending *Step
	for {
		off := d.InputOffset()
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("parse xml: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			name := t.Name.Local
			if depth != 1 || (name != "RequestMessage" && name != "ResponseMessage") {
				depth++
				continue
			}
			var n XNode
			if err := d.DecodeElement(&n, &t); err != nil {
				return nil, fmt.Errorf("parse %s at line %d: %w", name, line(data, off), err)
			}
			if name == "RequestMessage" {
				if pending != nil {
					return nil, fmt.Errorf("request at line %d has no response", pending.Line)
				}
				pending = &Step{Line: line(data, off), Request: &n}
				continue
			}
			if pending == nil {
				return nil, fmt.Errorf("response at line %d follows no request", line(data, off))
			}
			pending.Response = &n
			c.Steps = append(c.Steps, *pending)
			pending = nil
		case xml.EndElement:
			depth--
		}
	}
	if pending != nil {
		return nil, fmt.Errorf("request at line %d has no response", pending.Line)
	}
	if len(c.Steps) == 0 {
		return nil, errors.New("no request/response pairs")
	}
	return c, nil
}

func line(data []byte, off int64) int { return bytes.Count(data[:off], []byte("\n")) + 1 }

var placeholderRE = regexp.MustCompile(`^\$([A-Z][A-Z0-9_]*?)([+-][0-9]+)?$`)

// placeholder splits "$NAME" or "$NOW-3600"; ok is false for a literal value.
func placeholder(v string) (name string, offset time.Duration, ok bool) {
	m := placeholderRE.FindStringSubmatch(v)
	if m == nil {
		return "", 0, false
	}
	if m[2] != "" {
		s, err := strconv.Atoi(m[2])
		if err != nil {
			return "", 0, false
		}
		offset = time.Duration(s) * time.Second
	}
	return m[1], offset, true
}

// bind returns a copy of n with its placeholders replaced. A $NAME with no value in
// vars is an error when strict (requests); otherwise it gets a dummy value of its type
// so that the XML still decodes, and the comparison captures the real one.
func bind(n *XNode, vars map[string]*msg.Node, now time.Time, strict bool) (*XNode, error) {
	c := &XNode{XMLName: n.XMLName, Tag: n.Tag, Type: n.Type, Value: n.Value, Raw: n.Value}
	if name, off, ok := placeholder(n.Value); ok {
		switch v := vars[name]; {
		case name == "NOW":
			c.Value = now.Add(off).UTC().Format(time.RFC3339)
		case v != nil:
			c.Value = format(v)
		case strict:
			return nil, fmt.Errorf("$%s used before the server returned it", name)
		default:
			c.Value = dummy(n.Type, now)
		}
	}
	for _, ch := range n.Children {
		b, err := bind(ch, vars, now, strict)
		if err != nil {
			return nil, err
		}
		c.Children = append(c.Children, b)
	}
	return c, nil
}

// format renders a captured value in the XML encoding of its type.
func format(v *msg.Node) string {
	switch v.Type {
	case msg.TypeTextString:
		return string(v.Bytes)
	case msg.TypeByteString, msg.TypeBigInteger:
		return hex.EncodeToString(v.Bytes)
	case msg.TypeDateTime:
		return v.Time().Format(time.RFC3339)
	case msg.TypeBoolean:
		return strconv.FormatBool(v.Int == 1)
	default:
		return strconv.FormatInt(v.Int, 10)
	}
}

func dummy(typ string, now time.Time) string {
	switch typ {
	case "TextString":
		return "$"
	case "ByteString":
		return ""
	case "BigInteger":
		return "0000000000000000"
	case "DateTime", "DateTimeExtended":
		return now.UTC().Format(time.RFC3339)
	case "Boolean":
		return "false"
	default:
		return "0"
	}
}

// Encode turns a bound element into a TTLV tree through gemalto's XML codec, which
// knows the KMIP 1.4 tag, enumeration and mask names.
func Encode(n *XNode) (*msg.Node, error) {
	b, err := xml.Marshal(n)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", n.XMLName.Local, err)
	}
	var t ttlv.TTLV
	if err := xml.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("encode %s: %s", n.XMLName.Local, strings.TrimSpace(err.Error()))
	}
	node, err := msg.Decode(t)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", n.XMLName.Local, err)
	}
	return node, nil
}
