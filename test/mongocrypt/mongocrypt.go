//go:build e2e && cse

package mongocrypt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
	mcrypt "go.mongodb.org/mongo-driver/x/mongo/driver/mongocrypt"
	mcopts "go.mongodb.org/mongo-driver/x/mongo/driver/mongocrypt/options"
)

// Explicit encryption algorithms of client-side field level encryption.
const (
	Deterministic = "AEAD_AES_256_CBC_HMAC_SHA_512-Deterministic"
	Random        = "AEAD_AES_256_CBC_HMAC_SHA_512-Random"
)

// ioTimeout bounds one KMS exchange; the server answers in milliseconds.
const ioTimeout = 20 * time.Second

// Config says where the KMIP server is and which identity to present.
type Config struct {
	Endpoint string      // host:port of the KMIP server, given to libmongocrypt as is
	TLS      *tls.Config // client certificate and the CA that signed the server's
}

// Exchange is one KMS round trip as libmongocrypt produced and consumed it.
type Exchange struct {
	Endpoint string // what libmongocrypt asked to connect to
	Request  []byte // one TTLV request message
	Response []byte // the server's TTLV reply
}

// Crypt is one libmongocrypt handle (mongocrypt_t) with provider "kmip". Its key
// cache lives as long as it does.
type Crypt struct {
	mc        *mcrypt.MongoCrypt
	cfg       Config
	exchanges []Exchange
}

// New configures libmongocrypt with the single KMS provider "kmip".
func New(cfg Config) (*Crypt, error) {
	providers := bsoncore.NewDocumentBuilder().
		AppendDocument("kmip", bsoncore.NewDocumentBuilder().
			AppendString("endpoint", cfg.Endpoint).Build()).
		Build()
	mc, err := mcrypt.NewMongoCrypt(mcopts.MongoCrypt().
		SetKmsProviders(providers).
		SetCryptSharedLibDisabled(true).
		SetBypassQueryAnalysis(true))
	if err != nil {
		return nil, fmt.Errorf("create mongocrypt: %w", err)
	}
	return &Crypt{mc: mc, cfg: cfg}, nil
}

// Close releases the libmongocrypt handle.
func (c *Crypt) Close() { c.mc.Close() }

// Exchanges returns every KMS round trip so far, oldest first.
func (c *Crypt) Exchanges() []Exchange { return c.exchanges }

// CreateDataKey creates a data key whose master key lives on the KMIP server and
// returns the data key document a driver would insert into its key vault. With
// keyID "" libmongocrypt registers a fresh 96-byte secret there (Register,
// Activate, Get); otherwise it uses that existing secret (Get).
func (c *Crypt) CreateDataKey(ctx context.Context, keyID string) (bsoncore.Document, error) {
	opts := mcopts.DataKey()
	if keyID != "" {
		opts.SetMasterKey(bsoncore.NewDocumentBuilder().AppendString("keyId", keyID).Build())
	}
	mctx, err := c.mc.CreateDataKeyContext("kmip", opts)
	if err != nil {
		return nil, fmt.Errorf("create data key context: %w", err)
	}
	defer mctx.Close()
	doc, err := c.run(ctx, mctx, nil)
	if err != nil {
		return nil, fmt.Errorf("create data key: %w", err)
	}
	return doc, nil
}

// Encrypt encrypts value explicitly with the data key keyDoc and returns the
// document {"v": ciphertext (BSON binary subtype 6)}.
func (c *Crypt) Encrypt(ctx context.Context, keyDoc bsoncore.Document, value, algorithm string) (bsoncore.Document, error) {
	id, err := KeyID(keyDoc)
	if err != nil {
		return nil, err
	}
	in := bsoncore.NewDocumentBuilder().AppendString("v", value).Build()
	opts := mcopts.ExplicitEncryption().
		SetKeyID(primitive.Binary{Subtype: 4, Data: id}).
		SetAlgorithm(algorithm)
	mctx, err := c.mc.CreateExplicitEncryptionContext(in, opts)
	if err != nil {
		return nil, fmt.Errorf("create encryption context: %w", err)
	}
	defer mctx.Close()
	out, err := c.run(ctx, mctx, keyDoc)
	if err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	return out, nil
}

// Decrypt decrypts the document {"v": ciphertext} that Encrypt returned, using
// keyDoc when libmongocrypt asks the key vault for the data key.
func (c *Crypt) Decrypt(ctx context.Context, keyDoc, ciphertext bsoncore.Document) (string, error) {
	mctx, err := c.mc.CreateExplicitDecryptionContext(ciphertext)
	if err != nil {
		return "", fmt.Errorf("create decryption context: %w", err)
	}
	defer mctx.Close()
	out, err := c.run(ctx, mctx, keyDoc)
	if err != nil {
		return "", fmt.Errorf("decrypt: %w", err)
	}
	v, ok := out.Lookup("v").StringValueOK()
	if !ok {
		return "", fmt.Errorf("decrypt: result %v holds no string v", out)
	}
	return v, nil
}

// KeyID returns the UUID bytes of a data key document's _id.
func KeyID(keyDoc bsoncore.Document) ([]byte, error) {
	sub, id, ok := keyDoc.Lookup("_id").BinaryOK()
	if !ok || sub != 4 || len(id) != 16 {
		return nil, fmt.Errorf("key document %v: _id is not a UUID", keyDoc)
	}
	return id, nil
}

// run is libmongocrypt's state machine as a driver runs it, minus the database:
// the key vault is the single document keyDoc.
func (c *Crypt) run(ctx context.Context, mctx *mcrypt.Context, keyDoc bsoncore.Document) (bsoncore.Document, error) {
	for {
		switch st := mctx.State(); st {
		case mcrypt.NeedMongoKeys:
			if keyDoc == nil {
				return nil, errors.New("libmongocrypt asked for keys, none given")
			}
			if _, err := mctx.NextOperation(); err != nil {
				return nil, fmt.Errorf("key vault filter: %w", err)
			}
			if err := mctx.AddOperationResult(keyDoc); err != nil {
				return nil, fmt.Errorf("feed key document: %w", err)
			}
			if err := mctx.CompleteOperation(); err != nil {
				return nil, fmt.Errorf("complete key vault step: %w", err)
			}
		case mcrypt.NeedKms:
			for kctx := mctx.NextKmsContext(); kctx != nil; kctx = mctx.NextKmsContext() {
				if err := c.exchange(ctx, kctx); err != nil {
					return nil, err
				}
			}
			if err := mctx.FinishKmsContexts(); err != nil {
				return nil, fmt.Errorf("finish kms contexts: %w", err)
			}
		case mcrypt.Ready:
			doc, err := mctx.Finish()
			if err != nil {
				return nil, fmt.Errorf("finish: %w", err)
			}
			return doc, nil
		case mcrypt.StateError:
			// Finish reports the context's status, which holds the reason.
			_, err := mctx.Finish()
			return nil, fmt.Errorf("libmongocrypt error state: %w", err)
		default:
			return nil, fmt.Errorf("unexpected libmongocrypt state %v", st)
		}
	}
}

// exchange sends one KMS context's message over a fresh mutual-TLS connection
// and feeds the reply back in the chunk sizes libmongocrypt asks for.
func (c *Crypt) exchange(ctx context.Context, kctx *mcrypt.KmsContext) error {
	if p := kctx.KMSProvider(); p != "kmip" {
		return fmt.Errorf("kms context for provider %q, want kmip", p)
	}
	endpoint, err := kctx.HostName()
	if err != nil {
		return fmt.Errorf("kms endpoint: %w", err)
	}
	req, err := kctx.Message()
	if err != nil {
		return fmt.Errorf("kms message: %w", err)
	}
	host, _, err := net.SplitHostPort(endpoint)
	if err != nil {
		return fmt.Errorf("kms endpoint %q: %w", endpoint, err)
	}
	cfg := c.cfg.TLS.Clone()
	cfg.ServerName = host
	d := tls.Dialer{Config: cfg, NetDialer: &net.Dialer{Timeout: ioTimeout}}
	conn, err := d.DialContext(ctx, "tcp", endpoint)
	if err != nil {
		return fmt.Errorf("dial kms %s: %w", endpoint, err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
		return fmt.Errorf("kms deadline: %w", err)
	}
	if _, err := conn.Write(req); err != nil {
		return fmt.Errorf("send kms request to %s: %w", endpoint, err)
	}
	var resp []byte
	for n := kctx.BytesNeeded(); n > 0; n = kctx.BytesNeeded() {
		buf := make([]byte, n)
		if _, err := io.ReadFull(conn, buf); err != nil {
			return fmt.Errorf("read kms reply from %s after %d bytes: %w", endpoint, len(resp), err)
		}
		resp = append(resp, buf...)
		if err := kctx.FeedResponse(buf); err != nil {
			c.exchanges = append(c.exchanges, Exchange{Endpoint: endpoint, Request: req, Response: resp})
			return fmt.Errorf("kms reply rejected by libmongocrypt: %w", err)
		}
	}
	c.exchanges = append(c.exchanges, Exchange{Endpoint: endpoint, Request: req, Response: resp})
	return nil
}
