//go:build e2e && cse

// Package mongocrypt drives libmongocrypt, MongoDB's client-side field level
// encryption library and with it MongoDB's real KMIP client code, against an
// hsmkms server without any database.
//
// libmongocrypt never opens a socket: it hands out KMS contexts holding the
// exact TTLV bytes it wants sent and consumes the server's reply. This package
// carries those bytes over its own mutual-TLS connection (one connection per
// KMS context, as the drivers do) and records every exchange, so a test can
// check which KMIP operations libmongocrypt sent and in which protocol version.
// Where libmongocrypt asks for key documents (the key vault), the caller's
// saved data key document is fed back: no key vault exists.
//
// Everything here needs cgo and libmongocrypt (pkg-config libmongocrypt), so it
// builds only with the tags e2e and cse. Usage:
//
//	c, err := mongocrypt.New(mongocrypt.Config{Endpoint: addr, TLS: tlsCfg})
//	defer c.Close()
//	key, err := c.CreateDataKey(ctx, "")           // Register, Activate, Get
//	ct, err := c.Encrypt(ctx, key, "v", mongocrypt.Deterministic)
//	pt, err := c.Decrypt(ctx, key, ct)             // Get (unless cached)
//	c.Exchanges()                                  // what went over the wire
//
// The helper program in ./mcdecrypt decrypts a saved ciphertext in a fresh
// process, where libmongocrypt's key cache is empty and it must Get the key.
package mongocrypt
