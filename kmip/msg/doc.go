// Package msg holds the KMIP message vocabulary: a strict TTLV tree codec (Node), the
// request and response message types, and the version-aware encoding of replies.
//
// It knows nothing about connections or operations' semantics. Decoding is strict and
// bounded: every length is checked against the bytes actually present, nesting depth is
// limited, and primitive lengths must be exactly what the KMIP specification defines, so a
// hostile message can cost at most a small multiple of its own size in memory.
//
// Usage:
//
//	root, err := msg.Decode(buf)          // one whole TTLV message
//	req, err := msg.ParseRequest(root)    // header + batch items
//	resp := &msg.Response{Version: req.Header.Version, TimeStamp: now, Items: items}
//	out := resp.Node().Append(nil)
package msg
