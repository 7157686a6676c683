// Package kmiptest runs a real kmip.Server for tests: an in-memory PKI, a listener on
// 127.0.0.1:0 with mutual TLS, and a minimal client that speaks raw TTLV so tests see
// exactly the bytes a real client would.
//
// Invariants: everything it starts is stopped by t.Cleanup; the PKI never touches disk.
//
// Usage:
//
//	srv := kmiptest.NewServer(t, handler)
//	cl := srv.Dial(t, "alice")
//	item, err := cl.Call(t.Context(), msg.Version{Major: 1, Minor: 2}, uint32(kmip14.OperationGet), payload)
//	status, reason, message := kmiptest.Result(item)
package kmiptest
