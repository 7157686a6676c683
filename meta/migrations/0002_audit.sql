-- The audit trail: one row per KMIP batch item, CLI action, mirror apply,
-- backup or restore. Rows are only appended (and pruned from the oldest end).
-- mac chains the rows: HMAC-SHA256, keyed by a token key, over the previous
-- row's mac and this row's canonical encoding, seq included (see audit.go).
-- seq is assigned by AppendAudit as the previous seq + 1, never reused, so a
-- gap means a deleted row. time_ns is UTC unix nanoseconds: unlike KMIP
-- dates, audit times need sub-second order.
CREATE TABLE audit (
    seq         INTEGER PRIMARY KEY,
    time_ns     INTEGER NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('kmip', 'cli', 'mirror', 'backup', 'restore')),
    actor       TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    remote_addr TEXT    NOT NULL,
    kmip_version TEXT   NOT NULL,
    operation   TEXT    NOT NULL,
    object_ids  TEXT    NOT NULL, -- JSON array of strings
    status      TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    message     TEXT    NOT NULL,
    mac         BLOB    NOT NULL
) STRICT;

CREATE INDEX audit_time ON audit (time_ns);

-- The checkpoint pruning leaves behind: the seq and mac of the last pruned
-- row, which the first remaining row chains from. tag authenticates the
-- anchor itself (a MAC over seq, mac and time), so moving it by hand to hide
-- deleted rows is detected. At most one row (id = 1).
CREATE TABLE audit_anchor (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    seq     INTEGER NOT NULL,
    mac     BLOB    NOT NULL,
    time_ns INTEGER NOT NULL,
    tag     BLOB    NOT NULL
) STRICT;
