package mirror

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"time"
)

// certSPKI is the pin of a DER certificate: hex SHA-256 of its
// SubjectPublicKeyInfo, stable across re-issued certificates for one key.
func certSPKI(der []byte) (string, error) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return "", fmt.Errorf("parse certificate: %w", err)
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:]), nil
}

// Fingerprint formats a pin for operators: colon-separated pairs of the
// first 16 bytes, enough to compare by eye.
func Fingerprint(spki string) string {
	if len(spki) < 32 {
		return spki
	}
	out := make([]byte, 0, 47)
	for i := 0; i < 32; i += 2 {
		if i > 0 {
			out = append(out, ':')
		}
		out = append(out, spki[i:i+2]...)
	}
	return string(out)
}

// peerSPKI is the pin of the certificate the other side presented.
func peerSPKI(c *tls.Conn) (string, error) {
	st := c.ConnectionState()
	if len(st.PeerCertificates) == 0 {
		return "", errors.New("no certificate presented")
	}
	sum := sha256.Sum256(st.PeerCertificates[0].RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:]), nil
}

// dialTimeout bounds connecting and the TLS handshake to a peer.
const dialTimeout = 5 * time.Second

// dial connects to addr presenting cert, and accepts the server only if its
// key is pin (an empty pin is refused: every dial knows whom it expects).
func dial(ctx context.Context, addr string, cert tls.Certificate, pin string) (*tls.Conn, error) {
	d := tls.Dialer{
		NetDialer: &net.Dialer{Timeout: dialTimeout, KeepAlive: 15 * time.Second},
		Config: &tls.Config{
			Certificates: []tls.Certificate{cert},
			MinVersion:   tls.VersionTLS13,
			// Appliances have their own CAs; the pinned key is the identity.
			InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return errors.New("peer presented no certificate")
				}
				sum := sha256.Sum256(cs.PeerCertificates[0].RawSubjectPublicKeyInfo)
				if got := hex.EncodeToString(sum[:]); pin == "" || got != pin {
					return fmt.Errorf("%w: peer key %s is not the paired %s", ErrRefused, Fingerprint(got), Fingerprint(pin))
				}
				return nil
			},
		},
	}
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	return c.(*tls.Conn), nil
}
