// Package backup moves wrapped keys between KEKs and in and out of backup
// files: it writes, verifies and restores hsmkms backup files, rotates the
// master key, and seals custodian shares of the backup secret.
//
// It consumes the token and the metadata store through small interfaces it
// declares (Keys, MasterKeys, Store); *hsm.Token and *meta.Store implement
// them. It imports no PKCS#11 or SQL package.
//
// # File format (version 1)
//
//	"HSMKMSBK" | version (uint16, big endian) | frame...
//	frame = kind (1 byte) | length (uint32, big endian) | payload
//
// Frames come in this order: one 'H' (header, JSON), one 'O' per object
// (JSON, see Record), one 'E' (end, JSON, the object count again), one 'S'
// (seal, 32 bytes), then the end of the file. The seal is HMAC-SHA256,
// computed inside the token with the seal key of the backup KEK pair named
// in the header, over SHA-256 of every byte before the 'S' frame. Anything
// else, trailing bytes included, is a format error.
//
// # Invariants
//
//   - A backup file holds key material only wrapped under a backup KEK,
//     which never leaves a token except as custodian shares: the file alone
//     reveals no key. Key material is rewrapped inside the token (Rewrap).
//   - Create reads one snapshot (one meta View), so a backup taken while the
//     server writes is a consistent prefix of its history.
//   - Restore verifies the whole file (structure and seal) before it writes
//     anything; while applying it checks each batch against digests taken
//     during verification, so a file changed in between is refused too.
//     Restore is idempotent: a second run creates nothing.
//   - Rotation changes only the wrapping of a blob, compare-and-set, so a
//     concurrent server write always wins and is rewrapped in a later pass.
//
// # Usage
//
//	sum, err := backup.Create(ctx, tok, st, f, backup.CreateRequest{ApplianceID: id})
//	sum, err := backup.Verify(ctx, tok, f)
//	res, err := backup.Restore(ctx, tok, st, f, backup.RestoreRequest{})
//	res, err := backup.RotateMaster(ctx, tok, st, backup.RotateRequest{Retire: true})
package backup
