-- Users own keys and carry a plan (limits and monthly quota come from the plan in config).
CREATE TABLE users (
    id          BIGSERIAL PRIMARY KEY,
    email       TEXT    NOT NULL UNIQUE,
    plan        TEXT    NOT NULL,
    disabled    BIGINT  NOT NULL DEFAULT 0,
    created_at  BIGINT  NOT NULL
);

-- Per-key concurrency limit (open requests), beside rpm and tpm.
ALTER TABLE api_keys ADD COLUMN concurrency BIGINT;

-- Totals per UTC day, key and model, kept by the usage writer in the same
-- transaction as the records (0 stands for "no key" / "no user").
CREATE TABLE usage_daily (
    day               TEXT    NOT NULL,  -- YYYY-MM-DD (UTC)
    key_id            BIGINT  NOT NULL,
    model             TEXT    NOT NULL,
    user_id           BIGINT  NOT NULL,
    requests          BIGINT  NOT NULL,
    prompt_tokens     BIGINT  NOT NULL,
    completion_tokens BIGINT  NOT NULL,
    cost_nanousd      BIGINT  NOT NULL,
    PRIMARY KEY (day, key_id, model)
);
CREATE INDEX usage_daily_user_day ON usage_daily (user_id, day);
