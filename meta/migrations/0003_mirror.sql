-- Mirroring (see mirror.go). Every object carries three revisions, each a
-- hybrid logical clock and the appliance that wrote it: rev_* for its
-- attributes, life_* for its lifecycle (state, dates, revocation,
-- material) and grant_* for its grants, so that a revoked grant is not
-- brought back by a later change of an attribute elsewhere. mseq orders local changes: it is the object's position in this
-- appliance's change journal, which peers read from a cursor; an object's
-- newer change supersedes its older one, so the journal compacts itself.
ALTER TABLE objects ADD COLUMN rev_clock   INTEGER NOT NULL DEFAULT 0;
ALTER TABLE objects ADD COLUMN rev_origin  TEXT    NOT NULL DEFAULT '';
ALTER TABLE objects ADD COLUMN life_clock  INTEGER NOT NULL DEFAULT 0;
ALTER TABLE objects ADD COLUMN life_origin TEXT    NOT NULL DEFAULT '';
ALTER TABLE objects ADD COLUMN grant_clock  INTEGER NOT NULL DEFAULT 0;
ALTER TABLE objects ADD COLUMN grant_origin TEXT    NOT NULL DEFAULT '';
ALTER TABLE objects ADD COLUMN mseq        INTEGER NOT NULL DEFAULT 0;

-- Objects written before mirroring existed join the journal in seq order.
UPDATE objects SET mseq = seq;

CREATE INDEX objects_mseq ON objects (mseq);
CREATE INDEX objects_rev_clock ON objects (rev_clock);
CREATE INDEX objects_life_clock ON objects (life_clock);
CREATE INDEX objects_grant_clock ON objects (grant_clock);

-- The revision of each attribute (by name) an object's writes changed or
-- deleted, so that concurrent changes of different attributes on two
-- appliances both survive the merge. A name without a row has the zero
-- revision: it is as the object was created.
CREATE TABLE attr_revs (
    object_seq INTEGER NOT NULL REFERENCES objects (seq) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    clock      INTEGER NOT NULL,
    origin     TEXT    NOT NULL,
    PRIMARY KEY (object_seq, name)
) STRICT, WITHOUT ROWID;

-- Small appliance-wide values. appliance_id names this database among its
-- mirror peers; it is random so that two fresh appliances never collide.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

INSERT INTO settings (key, value) VALUES ('appliance_id', lower(hex(randomblob(8))));

-- Paired appliances. spki pins the peer's TLS key (hex SHA-256 of its
-- SubjectPublicKeyInfo); kek is the label of the pair KEK in the token.
-- cursor is the peer's mseq up to which its journal is applied here, moved
-- in the same transaction as the changes. The status columns are written by
-- the serving process for `mirror status`. ca_pem is the peer's client CA,
-- trusted for KMIP clients too so that they can fail over between peers.
CREATE TABLE mirror_peers (
    id           TEXT PRIMARY KEY,
    name         TEXT    NOT NULL,
    addr         TEXT    NOT NULL,
    spki         TEXT    NOT NULL,
    ecdh_pub     BLOB    NOT NULL,
    ca_pem       BLOB    NOT NULL,
    kek          TEXT    NOT NULL,
    paired       INTEGER NOT NULL,
    cursor       INTEGER NOT NULL DEFAULT 0,
    state        TEXT    NOT NULL DEFAULT 'new',
    acked        INTEGER NOT NULL DEFAULT 0,
    lag_entries  INTEGER NOT NULL DEFAULT 0,
    lag_ms       INTEGER NOT NULL DEFAULT 0,
    lag_p50_ms   INTEGER NOT NULL DEFAULT 0,
    lag_p99_ms   INTEGER NOT NULL DEFAULT 0,
    last_contact INTEGER,
    last_error   TEXT    NOT NULL DEFAULT '',
    status_at    INTEGER
) STRICT;

-- Outstanding pairing invitations: the SHA-256 of the one-time secret and
-- the expiry in Unix milliseconds.
CREATE TABLE mirror_invites (
    secret_hash TEXT PRIMARY KEY,
    expires     INTEGER NOT NULL
) STRICT;
