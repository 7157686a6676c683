-- Managed objects: the typed KMIP attributes meta filters on, plus the
-- wrapped key blob. seq is the rowid: it orders List and keys the child tables.
CREATE TABLE objects (
    seq                   INTEGER PRIMARY KEY,
    id                    TEXT    NOT NULL UNIQUE,
    type                  INTEGER NOT NULL,
    state                 INTEGER NOT NULL,
    owner                 TEXT    NOT NULL,
    algorithm             INTEGER NOT NULL,
    length                INTEGER NOT NULL,
    usage_mask            INTEGER NOT NULL,
    format                INTEGER NOT NULL,
    secret_type           INTEGER NOT NULL,
    wrapped               BLOB,
    kek                   TEXT    NOT NULL,
    created               INTEGER,
    updated               INTEGER,
    activation            INTEGER,
    deactivation          INTEGER,
    destroyed             INTEGER,
    compromise            INTEGER,
    compromise_occurrence INTEGER,
    revocation_reason     INTEGER NOT NULL,
    revocation_message    TEXT    NOT NULL
) STRICT;

CREATE INDEX objects_state ON objects (state);
CREATE INDEX objects_type ON objects (type);
CREATE INDEX objects_owner ON objects (owner);
-- Locate returns newest first; the index carries seq for the tie-break.
CREATE INDEX objects_created ON objects (created);

-- Every other attribute instance, value as opaque TTLV bytes.
CREATE TABLE attrs (
    object_seq INTEGER NOT NULL REFERENCES objects (seq) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    idx        INTEGER NOT NULL,
    value      BLOB    NOT NULL,
    PRIMARY KEY (object_seq, name, idx)
) STRICT, WITHOUT ROWID;

CREATE INDEX attrs_name_value ON attrs (name, value);

-- Identities other than the owner that may use an object.
CREATE TABLE grants (
    object_seq INTEGER NOT NULL REFERENCES objects (seq) ON DELETE CASCADE,
    identity   TEXT    NOT NULL,
    PRIMARY KEY (object_seq, identity)
) STRICT, WITHOUT ROWID;

CREATE INDEX grants_identity ON grants (identity, object_seq);
