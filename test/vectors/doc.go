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
//   - values the server chose at random are compared by length only: Key Material
//     and Digest Value of objects the server created (Create, Create Key Pair,
//     Re-key, in this conversation or an earlier one of the same Runner), the Data
//     and tag that such a key encrypts, decrypts or MACs, the ciphertext and tag of
//     an Encrypt under an IV the server chose, and RNG Retrieve's Data;
//   - an IV/Counter/Nonce in a reply to a request that supplied none is random;
//   - a random value is captured under its tag's placeholder name ($IV_COUNTER_NONCE,
//     $DATA_0 for the first Data, ...), which some files use in later requests while
//     their expected reply shows the reference server's example value;
//   - a Discover Versions reply to a request that listed no versions may start with
//     versions newer than the request's (the file was recorded on an older server);
//   - a Query reply must report every operation and object type the file lists, in
//     any order (a server may support more); Vendor Identification and the contents
//     of Server Information describe the vendor and are not compared;
//   - when a Get Attributes request names no attributes, and always for Get Attribute
//     List, the attributes (names) are compared as a multiset; such a Get Attributes
//     reply may also carry attributes that the file's own expected Get Attribute List
//     reply listed for the same object (TL-M-3's reference replies disagree).
//
// Usage:
//
//	r := &vectors.Runner{Addr: "127.0.0.1:5696", TLS: cfg, Skip: vectors.Skiplist}
//	sum := r.RunAll(ctx, files, os.Stdout) // one line per file, then the totals
//	if sum.Failed > 0 { ... }
package vectors
