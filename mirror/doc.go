// Package mirror will own active-active replication between appliances: it consumes
// the metadata journal, streams entries to paired peers over mutual TLS and applies
// theirs idempotently, merging by the rules in DESIGN.md (lifecycle state only moves
// forward, attributes last-writer-wins by hybrid logical clock with the appliance ID
// breaking ties, Destroy is a tombstone). Key material crosses only re-wrapped by hsm
// under the pair KEK both tokens derived by ECDH.
//
// Nothing here yet: pairing and replication are the subject of their own issue.
package mirror
