-- Dashboard accounts: an argon2id hash (NULL for users made with the CLI, who
-- cannot log in until they set a password).
ALTER TABLE users ADD COLUMN password_hash TEXT;

-- Browser sessions: only the SHA-256 of the cookie is stored.
CREATE TABLE sessions (
    id_hash     TEXT    PRIMARY KEY,
    user_id     BIGINT  NOT NULL,
    csrf_token  TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Upstream servers added through the admin API, merged with the YAML pools.
CREATE TABLE upstream_servers (
    id          BIGSERIAL PRIMARY KEY,
    pool        TEXT    NOT NULL,
    url         TEXT    NOT NULL,
    models      TEXT    NOT NULL,  -- JSON array
    weight      BIGINT  NOT NULL,
    priority    BIGINT  NOT NULL,
    api_key_env TEXT,
    created_at  BIGINT  NOT NULL
);
