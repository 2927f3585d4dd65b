-- The studio's browser sessions: see migrations/sqlite/0012_sessions.sql.
CREATE TABLE sessions (
    id_hash    TEXT COLLATE "C" PRIMARY KEY,
    token_hash TEXT COLLATE "C" NOT NULL,
    csrf       TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
