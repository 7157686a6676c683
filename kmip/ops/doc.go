// Package ops implements the KMIP operations on a token (Keys) and a metadata store
// (Store), one file per operation.
//
// Invariants:
//   - key material reaches a client only through Get (Keys.ExportPlain), and only for
//     objects whose Sensitive / Extractable attributes allow it;
//   - slow token work (generate, import) happens before the store transaction, so a
//     failed commit leaves nothing behind: the wrapped blob is simply dropped and no
//     half-made object is ever visible;
//   - lifecycle state only moves along the KMIP state diagram; every denial is a KMIP
//     result reason with a message naming the rule;
//   - replies carry only tags and attributes defined in the request's protocol version.
//
// Usage:
//
//	svc := ops.New(ops.Config{Keys: tok, Store: store, RoleOf: roleOf})
//	mux := kmip.NewMux()
//	svc.Register(mux)
package ops
