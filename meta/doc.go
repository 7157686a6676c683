// Package meta owns the SQLite database that holds KMIP managed objects:
// their typed metadata and lifecycle state, generic attributes (opaque TTLV
// values), access grants and the wrapped key blob. It is the only package
// that imports database/sql and modernc.org/sqlite, and it imports no other
// hsmkms package.
//
// Invariants:
//   - access goes only through Store.View (read-only snapshot on a reader
//     connection) and Store.Update (read-write); *sql.Tx and *sql.Conn never
//     escape;
//   - one connection writes; the database runs in WAL mode with
//     synchronous=FULL, so an Update that returned nil survives a crash or a
//     power loss;
//   - key material is stored only as the Wrapped blob; meta never sees
//     plaintext keys. The database file is created with mode 0600. An empty
//     KEK marks material that is not secret and not wrapped (public keys).
//     Backups walk one View snapshot (Walk, Census); master rotation swaps
//     blobs compare-and-set (WrappedNotUnder, SetWrapped, KEKUsage);
//   - the schema moves forward only, through the numbered files in
//     migrations/, and schema_version records each step. Opening a database
//     written by a newer binary fails.
//   - times are stored as UTC unix seconds (KMIP DateTime precision); the
//     zero time is NULL. Audit records alone keep nanoseconds.
//   - the audit trail (audit.go) is append-only and chained: AppendAudit
//     assigns the next seq and an HMAC (Options.Audit, the token's key) over
//     the previous MAC and the record inside the write transaction, so
//     writers in several processes never fork the chain; PruneAudit deletes
//     only a prefix and moves an authenticated anchor in the same
//     transaction. Computing that MAC is the one token call an Update
//     function makes (a few microseconds on SoftHSM2).
//
// # Group commit
//
// An fsync costs milliseconds, so one transaction per Update would cap the
// server at a few hundred durable writes per second. Instead Update hands its
// function to a single writer goroutine. The writer takes the first queued
// call, adds whatever is already queued (up to 256, never waiting for more),
// opens one transaction and runs each function inside its own SAVEPOINT:
// a function that fails or panics is rolled back to its savepoint alone and
// its caller gets the error (or the panic). One COMMIT, one fsync, then every
// successful caller returns. If the commit fails, each of them gets the
// commit error and nothing of the batch is written. If SQLite ends the
// transaction itself (it may on SQLITE_FULL or an I/O error), the functions
// already run in that batch fail with the cause and the ones not yet run go
// to the next batch. A full disk surfaces as ErrFull and the store keeps
// working once space returns. Options.MaxSize sets a quota that fails writes
// the same way (quota.go).
//
// Because functions run on the writer goroutine they must be short and must
// do no slow I/O (wrap keys in the HSM before calling Update), and an Update
// function must never call Update.
//
// Usage:
//
//	st, err := meta.Open(ctx, filepath.Join(dataDir, "meta.db"), meta.Options{Logger: log})
//	defer st.Close()
//	err = st.Update(ctx, func(tx *meta.Tx) error {
//		return tx.Create(&meta.Object{ID: id, Type: typ, State: state, Owner: cn,
//			Wrapped: blob, KEK: "master", Created: now, Updated: now})
//	})
//	err = st.View(ctx, func(tx *meta.Tx) error {
//		ids, err = tx.Locate(meta.Filter{Owner: cn, State: active, Limit: 10})
//		return err
//	})
package meta
