// Package kmip serves the Key Management Interoperability Protocol over mutual TLS.
//
// Layers run one way: bytes (package wire: framing under a size limit) → message
// (package msg: TTLV tree, header, batch items) → item (this package: the batch executor,
// ID placeholder, error mapping) → operation (package ops, behind the Handler interface).
//
// Invariants:
//   - every request gets a reply in the protocol version it used, or the connection is
//     closed after a framing error that makes the stream unrecoverable;
//   - a panic in a handler fails that batch item with General Failure and is logged; the
//     connection and the process stay up;
//   - errors reach clients only through ReasonFor, the one table that maps package
//     sentinels to KMIP result reasons;
//   - every limit hit (limit.go) and every failed handshake is logged once, naming the
//     limit or the cause, and reported to Server.Observer; this package knows no
//     metrics library (observe.go holds the Observer hook and the Measure middleware).
//
// Usage:
//
//	mux := kmip.NewMux()
//	mux.Handle(uint32(kmip14.OperationGet), kmip.HandlerFunc(get))
//	srv := &kmip.Server{Handler: mux, TLSConfig: cfg, Logger: log}
//	go srv.Serve(ln)
//	...
//	srv.Shutdown(ctx)
package kmip
