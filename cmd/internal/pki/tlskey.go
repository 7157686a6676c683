package pki

import (
	"crypto"
	"crypto/tls"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// TokenKeyLabel reads a [tls] key setting. A key held in the token is named by an
// RFC 7512 URI with its label, "pkcs11:object=hsmkms-tls" (the type attribute may be
// present; other attributes are refused, the token being the one [hsm] names); ok is
// false for anything else, which is a PEM file.
func TokenKeyLabel(key string) (label string, ok bool, err error) {
	rest, found := strings.CutPrefix(key, "pkcs11:")
	if !found {
		return "", false, nil
	}
	path, _, _ := strings.Cut(rest, "?") // query attributes (pin-source, module) are not ours to honour
	for attr := range strings.SplitSeq(path, ";") {
		name, value, _ := strings.Cut(attr, "=")
		v, err := url.PathUnescape(value)
		if err != nil {
			return "", true, fmt.Errorf("parse key URI %q: attribute %s: %w", key, name, err)
		}
		switch name {
		case "object":
			label = v
		case "type":
			if v != "private" {
				return "", true, fmt.Errorf("parse key URI %q: type=%s, want private", key, v)
			}
		default:
			return "", true, fmt.Errorf("parse key URI %q: attribute %q not supported (use pkcs11:object=LABEL; the token is [hsm]'s)", key, name)
		}
	}
	if label == "" {
		return "", true, fmt.Errorf("parse key URI %q: no object=LABEL", key)
	}
	return label, true, nil
}

// ServerTLSSigner is ServerTLS for a server key that never leaves the token: key
// signs the handshakes. It checks that key belongs to the certificate in certPath.
func ServerTLSSigner(caPath, certPath string, key crypto.Signer) (*tls.Config, error) {
	certs, err := readCerts(certPath)
	if err != nil {
		return nil, err
	}
	pub, ok := certs[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("load server certificate %s: its public key is not the token key's (was it issued by `hsmkms init --tls-key-in-token`?)", certPath)
	}
	chain := make([][]byte, len(certs))
	for i, c := range certs {
		chain[i] = c.Raw
	}
	return serverTLS(caPath, tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: certs[0]})
}

// CertifyFile certifies pub (see Certify) and writes the certificate to path, mode
// 0644, recording it as IssueFile does. It refuses to overwrite path.
func (ca *CA) CertifyFile(path string, req Request, pub crypto.PublicKey, now time.Time) (*Bundle, error) {
	b, err := ca.Certify(req, pub, now)
	if err != nil {
		return nil, err
	}
	if err := WriteFile(path, b.CertPEM, 0o644); err != nil {
		return nil, err
	}
	if err := ca.record(b); err != nil {
		return nil, err
	}
	return b, nil
}
