//go:build e2e

package test

// Hostile and broken input against the real server: it must answer or close, never
// crash or hang, and keep serving everyone else (and the same connection when the
// stream is still in sync).

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	mrand "math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/test/framework"
)

// badReplyTimeout is how long the server may take to answer or close after bad input.
const badReplyTimeout = 5 * time.Second

// outcome of sending bad bytes.
type outcome struct {
	reply  *msg.Node // nil when the server closed the connection
	client *framework.Client
}

// sendRaw sends b on a new connection (then, if halfClose, ends the client's side of
// the stream) and waits for a reply or the server closing. Silence fails the test.
func sendRaw(t *testing.T, app *framework.Appliance, b []byte, halfClose bool) outcome {
	t.Helper()
	c, err := framework.Dial(t.Context(), app.Addr, framework.ReadFile(t, app.AdminPEM), framework.ReadFile(t, app.CAPEM))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.Timeout = badReplyTimeout
	if err := c.Send(b); err != nil {
		return outcome{client: c} // the server closed while we were still writing
	}
	if halfClose {
		if err := c.Conn().CloseWrite(); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := c.Recv()
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("the server neither answered nor closed within %s", badReplyTimeout)
	case err != nil:
		return outcome{client: c}
	}
	n, err := msg.Decode(raw)
	if err != nil {
		t.Fatalf("reply to bad input does not decode: %v", err)
	}
	return outcome{reply: n, client: c}
}

// requireFailure checks that a reply to bad input is a well-formed failure.
func requireFailure(t *testing.T, o outcome, version msg.Version) {
	t.Helper()
	if o.reply == nil {
		t.Fatal("the server closed the connection; want a failure reply")
	}
	r := framework.Reply{Root: o.reply}
	if err := r.CheckHeader(version); err != nil {
		t.Fatalf("W2: %v", err)
	}
	st, reason := r.Status(0)
	if st != kmip14.ResultStatusOperationFailed {
		t.Fatalf("status %v, want Operation Failed", st)
	}
	t.Logf("answered Operation Failed / %v", reason)
}

// healthy checks the server process is alive and serves a new connection, and, when c
// is not nil, that connection too.
func healthy(t *testing.T, app *framework.Appliance, c *framework.Client) {
	t.Helper()
	if !app.Server.Running() {
		t.Fatal("the server process exited")
	}
	if c == nil {
		nc, err := framework.Dial(t.Context(), app.Addr, framework.ReadFile(t, app.AdminPEM), framework.ReadFile(t, app.CAPEM))
		if err != nil {
			t.Fatalf("new connection after bad input: %v", err)
		}
		defer nc.Close()
		c = nc
	}
	r, err := c.RoundTrip(framework.Request(framework.Header{Version: ver12}, framework.Item(kmip14.OperationDiscoverVersions, nil)))
	if err != nil {
		t.Fatalf("request after bad input: %v", err)
	}
	if st, reason := (framework.Reply{Root: r}).Status(0); st != kmip14.ResultStatusSuccess {
		t.Fatalf("Discover Versions after bad input: %v %v", st, reason)
	}
}

// header builds a Request Header from raw children.
func rawHeader(children ...*msg.Node) *msg.Node {
	return msg.Struct(kmip14.TagRequestHeader, children...)
}

func pv(minor int32) *msg.Node {
	return msg.Struct(kmip14.TagProtocolVersion, msg.Int(kmip14.TagProtocolVersionMajor, 1), msg.Int(kmip14.TagProtocolVersionMinor, minor))
}

func discoverItem() *msg.Node {
	return framework.Item(kmip14.OperationDiscoverVersions, nil)
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	app := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{})
	good := framework.Request(framework.Header{Version: ver12}, discoverItem()).Append(nil)

	// Messages that decode as TTLV but are not valid KMIP: the stream stays in sync,
	// so the server must answer with a failure and keep the connection.
	inSync := []struct {
		name string
		msg  *msg.Node
	}{
		{"batch count as text", msg.Struct(kmip14.TagRequestMessage,
			rawHeader(pv(2), msg.Text(kmip14.TagBatchCount, "1")), discoverItem())},
		{"batch count mismatch", msg.Struct(kmip14.TagRequestMessage,
			rawHeader(pv(2), msg.Int(kmip14.TagBatchCount, 2)), discoverItem())},
		{"no batch item", msg.Struct(kmip14.TagRequestMessage, rawHeader(pv(2), msg.Int(kmip14.TagBatchCount, 0)))},
		{"protocol version as enumeration", msg.Struct(kmip14.TagRequestMessage,
			rawHeader(msg.Struct(kmip14.TagProtocolVersion, msg.Enum(kmip14.TagProtocolVersionMajor, 1), msg.Enum(kmip14.TagProtocolVersionMinor, 2)),
				msg.Int(kmip14.TagBatchCount, 1)), discoverItem())},
		{"operation as integer", msg.Struct(kmip14.TagRequestMessage, rawHeader(pv(2), msg.Int(kmip14.TagBatchCount, 1)),
			msg.Struct(kmip14.TagBatchItem, msg.Int(kmip14.TagOperation, int32(kmip14.OperationGet)), msg.Struct(kmip14.TagRequestPayload)))},
		{"unknown operation", framework.Request(framework.Header{Version: ver12}, framework.Item(kmip14.Operation(0x7777), nil))},
		{"no header", msg.Struct(kmip14.TagRequestMessage, discoverItem())},
		{"response message sent as request", msg.Struct(kmip14.TagResponseMessage, rawHeader(pv(2), msg.Int(kmip14.TagBatchCount, 1)), discoverItem())},
		{"get with uid as bytes", framework.Request(framework.Header{Version: ver12},
			framework.Item(kmip14.OperationGet, nil, msg.Bytes(kmip14.TagUniqueIdentifier, []byte("x"))))},
		{"create with no template", framework.Request(framework.Header{Version: ver12},
			framework.Item(kmip14.OperationCreate, nil, objType(kmip14.ObjectTypeSymmetricKey)))},
		{"create with length as text", framework.Request(framework.Header{Version: ver12},
			framework.Item(kmip14.OperationCreate, nil, objType(kmip14.ObjectTypeSymmetricKey), framework.Template(
				enumAttr("Cryptographic Algorithm", uint32(kmip14.CryptographicAlgorithmAES)),
				framework.Attr("Cryptographic Length", msg.Text(0, "256")))))},
		{"create with an unknown tag in the payload", framework.Request(framework.Header{Version: ver12},
			framework.Item(kmip14.OperationCreate, nil, objType(kmip14.ObjectTypeSymmetricKey),
				&msg.Node{Tag: 0x42ffee, Type: msg.TypeInteger, Int: 1}))},
		{"register with an empty key", framework.Request(framework.Header{Version: ver12},
			framework.Item(kmip14.OperationRegister, nil, objType(kmip14.ObjectTypeSymmetricKey),
				framework.Template(), symmetricKey(nil, kmip14.CryptographicAlgorithmAES, 256)))},
		{"encrypt with no data", framework.Request(framework.Header{Version: ver12},
			framework.Item(kmip14.OperationEncrypt, nil, framework.UID("nope")))},
		{"unsupported version 9.9", framework.Request(framework.Header{Version: msg.Version{Major: 9, Minor: 9}},
			framework.Item(kmip14.OperationGet, nil, framework.UID("x")))},
	}
	for _, tc := range inSync {
		t.Run(tc.name, func(t *testing.T) {
			o := sendRaw(t, app, tc.msg.Append(nil), false)
			if o.reply == nil {
				t.Fatal("the server closed a connection whose stream was in sync; want a failure reply")
			}
			st, reason := framework.Reply{Root: o.reply}.Status(0)
			if st != kmip14.ResultStatusOperationFailed {
				t.Fatalf("status %v (%v), want Operation Failed", st, reason)
			}
			t.Logf("answered %v / %v", st, reason)
			healthy(t, app, o.client)
			healthy(t, app, nil)
		})
	}

	t.Run("unknown tag in header is ignored or refused", func(t *testing.T) {
		m := msg.Struct(kmip14.TagRequestMessage,
			rawHeader(pv(2), &msg.Node{Tag: 0x42ffee, Type: msg.TypeTextString, Bytes: []byte("?")}, msg.Int(kmip14.TagBatchCount, 1)), discoverItem())
		o := sendRaw(t, app, m.Append(nil), false)
		if o.reply == nil {
			t.Fatal("the server closed an in-sync connection")
		}
		if err := (framework.Reply{Root: o.reply}).CheckHeader(ver12); err != nil {
			t.Fatalf("W2: %v", err)
		}
		healthy(t, app, o.client)
	})

	// Broken framing: the server may answer or close, but must not hang or die.
	framing := []struct {
		name      string
		b         []byte
		halfClose bool
	}{
		{"truncated message then end of stream", good[:len(good)-5], true},
		{"header only then end of stream", good[:8], true},
		{"length beyond the bytes inside", withLength(good, uint32(len(good))), true},
		{"huge length 2 GiB", withLength(good[:8], 0x7ffffff0), false},
		{"length 4 GiB - 8", withLength(good[:8], 0xfffffff8), false},
		{"not a structure", msg.Int(kmip14.TagRequestMessage, 1).Append(nil), false},
		{"inner length beyond outer", innerOverrun(), false},
		{"structure length not a multiple of 8", oddStructure(), false},
		{"nesting 200 deep", nested(200), false},
		{"bad tag byte", []byte{0x00, 0x00, 0x78, 0x01, 0, 0, 0, 0}, false},
		{"boolean of 2", boolTwo(), false},
	}
	for _, tc := range framing {
		t.Run(tc.name, func(t *testing.T) {
			o := sendRaw(t, app, tc.b, tc.halfClose)
			if o.reply != nil {
				requireFailureAnyVersion(t, o)
			}
			healthy(t, app, nil)
		})
	}

	t.Run("oversize message beyond 1 MiB", func(t *testing.T) {
		big := framework.Request(framework.Header{Version: ver12}, framework.Item(kmip14.OperationRegister, nil,
			objType(kmip14.ObjectTypeSecretData), framework.Template(),
			msg.Struct(kmip14.TagSecretData, msg.Enum(kmip14.TagSecretDataType, uint32(kmip14.SecretDataTypePassword)),
				msg.Struct(kmip14.TagKeyBlock, msg.Enum(kmip14.TagKeyFormatType, uint32(kmip14.KeyFormatTypeOpaque)),
					msg.Struct(kmip14.TagKeyValue, msg.Bytes(kmip14.TagKeyMaterial, make([]byte, 3<<19)))))))
		o := sendRaw(t, app, big.Append(nil), false)
		if o.reply != nil {
			requireFailureAnyVersion(t, o)
		}
		healthy(t, app, nil)
	})

	t.Run("random bytes", func(t *testing.T) {
		rng := mrand.New(mrand.NewPCG(20240501, 7))
		for i := range 30 {
			b := make([]byte, 8+rng.IntN(600))
			for j := range b {
				b[j] = byte(rng.UintN(256))
			}
			if i%2 == 0 {
				// Half look like a Request Message with a plausible length, so
				// they reach the decoder instead of being refused by framing.
				copy(b, []byte{0x42, 0x00, 0x78, 0x01})
				binary.BigEndian.PutUint32(b[4:], uint32(len(b)-8))
			}
			o := sendRaw(t, app, b, true)
			if o.reply != nil {
				requireFailureAnyVersion(t, o)
			}
		}
		healthy(t, app, nil)
	})

	t.Run("many bad messages on one connection", func(t *testing.T) {
		c, err := framework.Dial(t.Context(), app.Addr, framework.ReadFile(t, app.AdminPEM), framework.ReadFile(t, app.CAPEM))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for i := range 50 {
			b := inSync[i%len(inSync)].msg.Append(nil)
			if _, err := c.RoundTripRaw(b); err != nil {
				t.Fatalf("bad message %d: %v", i, err)
			}
		}
		healthy(t, app, c)
	})
}

// requireFailureAnyVersion checks a reply to undecodable bytes: a failure in some
// supported version's header layout.
func requireFailureAnyVersion(t *testing.T, o outcome) {
	t.Helper()
	h := o.reply.Child(kmip14.TagResponseHeader).Child(kmip14.TagProtocolVersion)
	v := msg.Version{Major: int32(h.Child(kmip14.TagProtocolVersionMajor).Int), Minor: int32(h.Child(kmip14.TagProtocolVersionMinor).Int)}
	if !msg.IsSupported(v) {
		t.Fatalf("reply in version %v", v)
	}
	requireFailure(t, o, v)
}

func withLength(b []byte, l uint32) []byte {
	c := append([]byte(nil), b...)
	binary.BigEndian.PutUint32(c[4:8], l)
	return c
}

// innerOverrun is a Request Message whose header claims more bytes than the message
// holds.
func innerOverrun() []byte {
	b := framework.Request(framework.Header{Version: ver12}, discoverItem()).Append(nil)
	binary.BigEndian.PutUint32(b[12:16], 0x1000) // the Request Header's length
	return b
}

func oddStructure() []byte {
	b := framework.Request(framework.Header{Version: ver12}, discoverItem()).Append(nil)
	b = append(b[:8], append([]byte{0x42, 0x00, 0x77, 0x01, 0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 0, 0}, b[8:]...)...)
	binary.BigEndian.PutUint32(b[4:8], uint32(len(b)-8))
	return b
}

func nested(depth int) []byte {
	n := msg.Struct(kmip14.TagRequestPayload, framework.UID("x"))
	for range depth {
		n = msg.Struct(kmip14.TagRequestPayload, n)
	}
	return framework.Request(framework.Header{Version: ver12}, msg.Struct(kmip14.TagBatchItem,
		msg.Enum(kmip14.TagOperation, uint32(kmip14.OperationGet)), n)).Append(nil)
}

func boolTwo() []byte {
	m := framework.Request(framework.Header{Version: ver12}, framework.Item(kmip14.OperationGet, nil, framework.UID("x")))
	hdr := m.Children[0]
	hdr.Children = append(hdr.Children[:1], append([]*msg.Node{{Tag: kmip14.TagAsynchronousIndicator, Type: msg.TypeBoolean, Int: 2}}, hdr.Children[1:]...)...)
	return m.Append(nil)
}

// TestTLSIdentity checks W14's client side: no certificate, a certificate from another
// CA, and a client using another client's key.
func TestTLSIdentity(t *testing.T) {
	t.Parallel()
	app := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{})
	ca := framework.ReadFile(t, app.CAPEM)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)

	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: v, MaxVersion: v}
		c, err := framework.DialTLS(t.Context(), app.Addr, cfg)
		if err == nil {
			// TLS 1.3 reports the server's refusal on the first read.
			c.Timeout = badReplyTimeout
			_, err = c.RoundTrip(framework.Request(framework.Header{Version: ver12}, discoverItem()))
			c.Close()
		}
		if err == nil {
			t.Fatalf("TLS %x: a client without a certificate was served", v)
		}
		t.Logf("TLS %x without certificate: %v", v, err)
	}

	// A self-made CA's client certificate is refused too.
	other := framework.StartAppliance(t, hsmkmsBin, framework.ApplianceOptions{NoServe: true})
	c, err := framework.Dial(t.Context(), app.Addr, framework.ReadFile(t, other.AdminPEM), ca)
	if err == nil {
		c.Timeout = badReplyTimeout
		_, err = c.RoundTrip(framework.Request(framework.Header{Version: ver12}, discoverItem()))
		c.Close()
	}
	if err == nil {
		t.Fatal("a client certificate from another CA was served")
	}
	healthy(t, app, nil)

	// Ownership: a role-client identity may not touch another client's key.
	alice := app.IssueClient(t, "alice", "client")
	bob := app.IssueClient(t, "bob", "client")
	sa := openKMIP(t, app, alice, framework.Header{Version: ver12})
	key := make([]byte, 32)
	rand.Read(key)
	uid := uidOf(t, "Register payload", sa.ok(kmip14.OperationRegister, objType(kmip14.ObjectTypeSymmetricKey),
		framework.Template(intAttr("Cryptographic Usage Mask", maskEncryptDecrypt)),
		symmetricKey(key, kmip14.CryptographicAlgorithmAES, 256)))
	sa.ok(kmip14.OperationActivate, framework.UID(uid))
	sb := openKMIP(t, app, bob, framework.Header{Version: ver12})
	sb.fail(kmip14.OperationGet, kmip14.ResultReasonPermissionDenied, framework.UID(uid))
	sb.fail(kmip14.OperationGetAttributes, kmip14.ResultReasonPermissionDenied, framework.UID(uid), msg.Text(kmip14.TagAttributeName, "State"))
	sb.fail(kmip14.OperationEncrypt, kmip14.ResultReasonPermissionDenied, framework.UID(uid), msg.Bytes(kmip14.TagData, []byte("x")))
	sb.fail(kmip14.OperationRevoke, kmip14.ResultReasonPermissionDenied, framework.UID(uid),
		msg.Struct(kmip14.TagRevocationReason, msg.Enum(kmip14.TagRevocationReasonCode, uint32(kmip14.RevocationReasonCodeKeyCompromise))))
	sb.fail(kmip14.OperationDestroy, kmip14.ResultReasonPermissionDenied, framework.UID(uid))
	// Bob's refusals changed nothing: Alice still reads her active key.
	if st := keyState(t, sa, uid); st != kmip14.StateActive {
		t.Fatalf("state after bob's attempts: %v", st)
	}
	if got := getSymKey(t, sa, uid, 256); string(got) != string(key) {
		t.Fatal("alice's key changed")
	}
	// The admin reads everything.
	sadm := openKMIP(t, app, app.AdminPEM, framework.Header{Version: ver12})
	getSymKey(t, sadm, uid, 256)
}
