-- Several servers on one store. `leases`: a named lease (the `controllers` lease says which
-- server runs the background controllers), held by one server until `expires_at` (ms, on the
-- database's clock); `epoch` grows by one whenever the holder changes, so a server can tell it
-- was replaced. `servers`: each server as it last reported itself (`seen_at`).
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    epoch      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE servers (
    id         TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    host       TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    version    TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    seen_at    INTEGER NOT NULL
);
