// Package wire frames KMIP messages on a byte stream. It owns nothing but the 8-byte
// TTLV header of the outermost item and knows no operations.
//
// Invariants:
//   - ReadMessage never allocates more than the limit it is given: the header is read
//     first and 8+length is checked against the limit before the body buffer exists;
//   - a message whose length was honoured (read or discarded in full) leaves the stream
//     positioned on the next message, so the caller can answer the bad one and go on;
//   - io.EOF means the peer ended the stream cleanly between messages, nothing else.
//
// Usage:
//
//	b, err := wire.ReadMessage(r, 1<<20)
//	var tl *wire.TooLargeError
//	if errors.As(err, &tl) && tl.Length <= 16<<20 {
//		err = wire.Discard(r, int64(tl.Length-wire.HeaderSize)) // resync, then reply
//	}
package wire
