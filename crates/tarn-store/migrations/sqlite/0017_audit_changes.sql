-- What a call changed: the fields of the resource it updated (names only, never values, so
-- never a secret), comma-separated; empty when the call does not say.
ALTER TABLE audit_events ADD COLUMN changes TEXT NOT NULL DEFAULT '';
