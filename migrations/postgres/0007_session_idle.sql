-- Sessions end after `admin.session_idle_secs` without use, and expired or idle
-- ones are deleted by a periodic sweep (which the expiry index serves).
ALTER TABLE sessions ADD COLUMN last_seen_at BIGINT NOT NULL DEFAULT 0;
UPDATE sessions SET last_seen_at = created_at;
CREATE INDEX sessions_expiry ON sessions (expires_at);
