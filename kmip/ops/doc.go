// Package ops implements the KMIP operations on a token (Keys) and a metadata store
// (Store), one file per operation.
//
// Invariants:
//   - key material reaches a client only through Get (Keys.ExportPlain), and only for
//     objects whose Sensitive / Extractable attributes allow it; wrapped under another
//     managed key (Keys.WrapKey), only for Extractable objects;
//   - a Private Key's meta.Object.Wrapped is its blob under the master key; a Public
//     Key's is its DER SubjectPublicKeyInfo and a Certificate's its DER X.509, both with
//     KEK "" because they are not secret (create_key_pair.go);
//   - slow token work (generate, import) happens before the store transaction, so a
//     failed commit leaves nothing behind: the wrapped blob is simply dropped and no
//     half-made object is ever visible;
//   - lifecycle state only moves along the KMIP state diagram; every denial is a KMIP
//     result reason with a message naming the rule;
//   - replies carry only tags and attributes defined in the request's protocol version;
//   - every operation Register installs runs behind the Policy's check of the caller's
//     role (authz.go), and Query reports exactly what Register installed;
//   - dates that drive the lifecycle (Activation, Deactivation, Process Start,
//     Protect Stop) take effect when their time comes, on every read (settle) and use
//     (usable), never by a background job;
//   - streamed Encrypt/Decrypt (stream.go) keep no PKCS#11 operation open between
//     requests; their buffers are bounded, owned by one identity and cleared.
//
// Usage:
//
//	pol, err := ops.NewPolicy(roles, fallback) // roles from [[auth.roles]]
//	svc := ops.New(ops.Config{Keys: tok, Store: store, Policy: pol})
//	mux := kmip.NewMux()
//	svc.Register(mux)
package ops
