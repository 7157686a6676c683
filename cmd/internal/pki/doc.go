// Package pki is the appliance's small certificate authority: it creates the CA, the
// server certificate and client bundles under DIR/pki, and loads the server's TLS
// configuration.
//
// Invariants:
//   - every key is ECDSA P-256, generated with crypto/rand; private key files are
//     written 0600 with O_EXCL, so nothing is ever overwritten, and directories 0700;
//   - a client's role travels in its certificate as the Subject OrganizationalUnit
//     (OUAdmin or OUClient). The server may trust it because it accepts only
//     certificates signed by this CA, and this CA signs only what `hsmkms certs issue`
//     and `hsmkms init` ask for;
//   - server certificates carry EKU serverAuth only and client certificates clientAuth
//     only (PyKMIP and Go's TLS stack check them);
//   - every certificate issued is also recorded (certificate only, no key) in
//     DIR/pki/issued/<serial>.pem, which `certs list` reads;
//   - DIR/pki/revoked.txt (revoke.go) lists revoked client serials; it is replaced
//     atomically, and RevocationList rereads it when it changes, so a revocation takes
//     effect at the next handshake. A broken file never unrevokes anything.
//
// The CA key lives in DIR/pki/ca-key.pem. Moving it into the token (a non-extractable
// ECDSA key signing through hsm) is planned; until then the file's mode and the
// directory's are its only protection.
//
// Usage:
//
//	l := pki.Layout(filepath.Join(dir, "pki"))
//	ca, err := pki.Create(l, []string{"kms.example.com", "10.0.0.5"}, time.Now())
//	bundle, err := ca.Issue(pki.ClientRequest("mongod-1", pki.RoleClient, 365*24*time.Hour), time.Now())
//	err = pki.WriteBundle(path, bundle)
//	tlsCfg, err := pki.ServerTLS(l.CA, l.Cert, l.Key)
package pki
