-- The studio's browser sessions, in the store so that any server answers a logged-in browser.
-- Only hashes of the session id and of the token the session acts with are kept: a copy of
-- the database opens no session. `expires_at` is in ms since the epoch.
CREATE TABLE sessions (
    id_hash    TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
