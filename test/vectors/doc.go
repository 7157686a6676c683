// Package vectors replays KMIP XML conversations (the OASIS profile test cases in
// ../shared/kmip-vectors) against a KMIP server over mutual TLS and compares every reply
// with the expected one, structurally.
//
// A conversation file holds RequestMessage and ResponseMessage elements in turn. Before
// a request is sent, its placeholders are bound: $NOW, $NOW-n and $NOW+n become the
// current time moved by n seconds; $UNIQUE_IDENTIFIER_n and every other $NAME become the
// value the server returned where an earlier expected response had that placeholder.
// The bound XML is decoded with gemalto's ttlv.TTLV XML codec (which resolves enum and
// bitmask names) and sent; the reply is decoded with the project's msg codec.
//
// Comparison rules (Compare): tags, types, order and values must match, except
//   - a placeholder in the expected response captures the server's value (the first
//     time) or must equal what it captured before; two different $UNIQUE_IDENTIFIER_n
//     never capture the same value;
//   - Date-Time values expected as $NOW… are accepted within Tolerance of that time; a
//     concrete Date-Time the file never sent in a request is a server time stamp and is
//     accepted within Tolerance of now;
//   - Result Message text is ignored (only its type is checked);
//   - Key Material, and Digest Value inside an attribute, of objects the server created
//     (Create, Create Key Pair, Re-key) are random: only their length is compared;
//   - an IV/Counter/Nonce in a reply to a request that supplied none is random;
//   - when a Get Attributes request names no attributes, and always for Get Attribute
//     List, the attributes (names) are compared as a multiset.
//
// Usage:
//
//	r := &vectors.Runner{Addr: "127.0.0.1:5696", TLS: cfg, Skip: vectors.Skiplist}
//	sum := r.RunAll(ctx, files, os.Stdout) // one line per file, then the totals
//	if sum.Failed > 0 { ... }
package vectors
