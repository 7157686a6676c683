package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/kmip/wire"
)

// protocol is the KMIP version of every request: PyKMIP 0.10 defaults to 1.2, and
// both servers are asked for the same thing.
var protocol = msg.Version{Major: 1, Minor: 2}

// maxReply bounds a reply; the largest one here is a Get of a 32-byte key.
const maxReply = 64 << 10

// conn is one persistent KMIP connection. It is used by one goroutine at a time.
type conn struct {
	tc *tls.Conn
	br *bufio.Reader
}

// dialTimeout bounds a connect plus TLS handshake.
const dialTimeout = 15 * time.Second

// dial connects and completes the TLS handshake, so a dial's cost is all paid here.
func dial(ctx context.Context, addr string, cfg *tls.Config) (*conn, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: dialTimeout}, Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	tc := c.(*tls.Conn)
	return &conn{tc: tc, br: bufio.NewReader(tc)}, nil
}

func (c *conn) Close() error { return c.tc.Close() }

// call sends one encoded request (see request) and returns the Response Payload of
// its single batch item, or an error naming the operation and, when the server
// refused, its Result Reason and Result Message.
func (c *conn) call(op kmip14.Operation, req []byte) (*msg.Node, error) {
	if _, err := c.tc.Write(req); err != nil {
		return nil, fmt.Errorf("send %v: %w", op, err)
	}
	b, err := wire.ReadMessage(c.br, maxReply)
	if err != nil {
		return nil, fmt.Errorf("receive %v reply: %w", op, err)
	}
	root, err := msg.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("decode %v reply: %w", op, err)
	}
	return replyPayload(op, root)
}

// replyPayload checks that root is a one-item Response Message that succeeded.
func replyPayload(op kmip14.Operation, root *msg.Node) (*msg.Node, error) {
	if root.Tag != kmip14.TagResponseMessage {
		return nil, fmt.Errorf("check %v reply: got %v, want a Response Message", op, root.Tag)
	}
	items := root.All(kmip14.TagBatchItem)
	if len(items) != 1 {
		return nil, fmt.Errorf("check %v reply: %d batch items, want 1", op, len(items))
	}
	it := items[0]
	st := it.Child(kmip14.TagResultStatus)
	if st == nil {
		return nil, fmt.Errorf("check %v reply: no Result Status", op)
	}
	if kmip14.ResultStatus(st.Int) != kmip14.ResultStatusSuccess {
		var reason kmip14.ResultReason
		if r := it.Child(kmip14.TagResultReason); r != nil {
			reason = kmip14.ResultReason(r.Int)
		}
		var text string
		if m := it.Child(kmip14.TagResultMessage); m != nil {
			text = m.Text()
		}
		return nil, fmt.Errorf("%v: %v: %v: %q", op, kmip14.ResultStatus(st.Int), reason, text)
	}
	if o := it.Child(kmip14.TagOperation); o == nil || kmip14.Operation(o.Int) != op {
		return nil, fmt.Errorf("check %v reply: operation missing or different", op)
	}
	p := it.Child(kmip14.TagResponsePayload)
	if p == nil {
		return nil, fmt.Errorf("check %v reply: no Response Payload", op)
	}
	return p, nil
}

// request encodes a one-item Request Message in protocol.
func request(op kmip14.Operation, payload *msg.Node) []byte {
	return msg.Struct(kmip14.TagRequestMessage,
		msg.Struct(kmip14.TagRequestHeader,
			msg.Struct(kmip14.TagProtocolVersion,
				msg.Int(kmip14.TagProtocolVersionMajor, protocol.Major),
				msg.Int(kmip14.TagProtocolVersionMinor, protocol.Minor)),
			msg.Int(kmip14.TagBatchCount, 1)),
		msg.Struct(kmip14.TagBatchItem,
			msg.Enum(kmip14.TagOperation, uint32(op)),
			payload),
	).Append(nil)
}

func attr(name string, value *msg.Node) *msg.Node {
	return msg.Struct(kmip14.TagAttribute, msg.Text(kmip14.TagAttributeName, name), value)
}

func payload(children ...*msg.Node) *msg.Node {
	return msg.Struct(kmip14.TagRequestPayload, children...)
}

func uidNode(id string) *msg.Node { return msg.Text(kmip14.TagUniqueIdentifier, id) }

// createAES256 asks for an AES-256 key usable for Encrypt and Decrypt.
func createAES256() []byte {
	return request(kmip14.OperationCreate, payload(
		msg.Enum(kmip14.TagObjectType, uint32(kmip14.ObjectTypeSymmetricKey)),
		msg.Struct(kmip14.TagTemplateAttribute,
			attr("Cryptographic Algorithm", msg.Enum(kmip14.TagAttributeValue, uint32(kmip14.CryptographicAlgorithmAES))),
			attr("Cryptographic Length", msg.Int(kmip14.TagAttributeValue, 256)),
			attr("Cryptographic Usage Mask", msg.Int(kmip14.TagAttributeValue,
				int32(kmip14.CryptographicUsageMaskEncrypt|kmip14.CryptographicUsageMaskDecrypt))),
		)))
}

func activate(id string) []byte { return request(kmip14.OperationActivate, payload(uidNode(id))) }

func get(id string) []byte { return request(kmip14.OperationGet, payload(uidNode(id))) }

func getState(id string) []byte {
	return request(kmip14.OperationGetAttributes, payload(uidNode(id), msg.Text(kmip14.TagAttributeName, "State")))
}

// plaintext is what Encrypt sends: 64 bytes, the size of a data key.
var plaintext = make([]byte, 64)

// encrypt64 names AES-CBC with PKCS5 padding explicitly: it is hsmkms's default, and
// PyKMIP 0.10 refuses an Encrypt without Cryptographic Parameters. No IV is sent, so
// both servers generate one per call.
func encrypt64(id string) []byte {
	return request(kmip14.OperationEncrypt, payload(uidNode(id),
		msg.Struct(kmip14.TagCryptographicParameters,
			msg.Enum(kmip14.TagBlockCipherMode, uint32(kmip14.BlockCipherModeCBC)),
			msg.Enum(kmip14.TagPaddingMethod, uint32(kmip14.PaddingMethodPKCS5)),
			msg.Enum(kmip14.TagCryptographicAlgorithm, uint32(kmip14.CryptographicAlgorithmAES))),
		msg.Bytes(kmip14.TagData, plaintext)))
}

// Checks of reply payloads beyond Success, so a server that answers Success with the
// wrong thing does not count.

func checkCreated(p *msg.Node) (string, error) {
	id := p.Child(kmip14.TagUniqueIdentifier)
	if id == nil || id.Text() == "" {
		return "", fmt.Errorf("check Create reply: no Unique Identifier")
	}
	return id.Text(), nil
}

func checkGot(p *msg.Node) error {
	v := p.Child(kmip14.TagSymmetricKey).Child(kmip14.TagKeyBlock).Child(kmip14.TagKeyValue)
	if v == nil {
		return fmt.Errorf("check Get reply: no Symmetric Key with a Key Value")
	}
	return nil
}

func checkState(p *msg.Node) error {
	for _, a := range p.All(kmip14.TagAttribute) {
		if a.Child(kmip14.TagAttributeName).Text() == "State" {
			if s := a.Child(kmip14.TagAttributeValue); s != nil && kmip14.State(s.Int) == kmip14.StateActive {
				return nil
			}
			return fmt.Errorf("check Get Attributes reply: State is not Active")
		}
	}
	return fmt.Errorf("check Get Attributes reply: no State attribute")
}

func checkEncrypted(p *msg.Node) error {
	// 64 bytes plus one full block of PKCS5 padding.
	if d := p.Child(kmip14.TagData); d == nil || len(d.Bytes) != 80 {
		return fmt.Errorf("check Encrypt reply: want 80 bytes of ciphertext")
	}
	return nil
}
