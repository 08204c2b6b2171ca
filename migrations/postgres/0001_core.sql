-- API keys: only the SHA-256 of a key is stored; the key itself is shown once.
CREATE TABLE api_keys (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT    NOT NULL,
    key_hash    TEXT    NOT NULL UNIQUE,
    key_prefix  TEXT    NOT NULL,
    key_last4   TEXT    NOT NULL,
    user_id     BIGINT,
    models      TEXT,              -- JSON array: model allow-list, NULL = every model
    rpm         BIGINT,
    tpm         BIGINT,
    created_at  BIGINT  NOT NULL,  -- unix milliseconds
    expires_at  BIGINT,
    revoked_at  BIGINT
);

-- One row per proxied request, written by the batch writer.
CREATE TABLE usage_records (
    id                BIGSERIAL PRIMARY KEY,
    request_id        TEXT    NOT NULL UNIQUE,
    created_at        BIGINT  NOT NULL,
    key_id            BIGINT,
    user_id           BIGINT,
    endpoint          TEXT    NOT NULL,
    model             TEXT,
    backend           TEXT,
    status            INTEGER NOT NULL,
    stream            INTEGER NOT NULL,  -- 0 or 1 (portable across both backends)
    prompt_tokens     BIGINT  NOT NULL,
    completion_tokens BIGINT  NOT NULL,
    usage_source      TEXT    NOT NULL,  -- upstream | tokenizer | none
    cost_nanousd      BIGINT  NOT NULL,
    latency_ms        BIGINT  NOT NULL,
    ttfb_ms           BIGINT,
    error_code        TEXT
);
CREATE INDEX usage_records_key_time ON usage_records (key_id, created_at);
CREATE INDEX usage_records_time ON usage_records (created_at);
