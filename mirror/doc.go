// Package mirror replicates managed objects between paired appliances,
// active-active: every appliance accepts writes, and all converge.
//
// # Model
//
// The journal is meta's: every object carries an attribute revision and a
// lifecycle revision (hybrid logical clock + appliance id, meta.Rev) and a
// journal position (mseq) that every local write or applied peer change
// moves to the end. Reading the objects table by mseq after a cursor gives
// every change since, each object once at its newest state, so the journal
// compacts itself and entries carry whole objects (and grants).
//
// Each Node pulls from each peer: it dials the peer's mirror listener,
// sends its cursor, applies each page of entries in one transaction that
// also moves the cursor, and acknowledges. The peer streams its journal
// after the cursor and then each commit as it happens (Notify), with a
// heartbeat every second. Material travels only rewrapped by the token from
// the master key to the pair KEK (and on arrival back to the master), never
// in plaintext; entries a peer wrote itself are not echoed back.
//
// Merge (merge.go) is a join: the object's own fields, each attribute name
// (meta.AttrRev; deletions included) and the grants each come from the
// version whose write of them has the greater (clock, origin); the
// lifecycle from the version further
// along Pre-Active < Active < Deactivated < Compromised < Destroyed <
// Destroyed Compromised, ties by clock and origin; a Destroy concurrent with
// a Compromise gives Destroyed Compromised under a new revision. Destroyed
// objects stay as tombstones without material. Applying a version already
// held changes nothing, so redelivery and replay are harmless.
//
// Anti-entropy (pull.go) compares SHA-256 digests of the revisions in 256
// ID buckets with each peer now and then and fetches the objects of the
// buckets that differ: it repairs what a cursor cannot (a restored or
// replaced database).
//
// With write_ack one or all, Create-like operations wait (Await) until
// enough peers acknowledged the journal position of the new objects; on
// timeout the caller destroys them, which replicates too.
//
// # Trust
//
// Pairing (pair.go) uses a one-time invitation and HMAC proofs; each side
// pins the other's TLS public key and derives the pair KEK in its token by
// ECDH (hsm.Token.DerivePairKEK). The listener accepts a connection only
// from a pinned key whose appliance id matches; others are refused and
// logged. Peers exchange client CAs at pairing so that KMIP clients can
// fail over between appliances, and share their certificate revocation
// lists on the streams (a union: a peer never takes a revocation back).
package mirror
