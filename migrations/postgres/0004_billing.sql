-- Billing through Creem: one subscription row per user (the newest one we know
-- of), kept in step with users.plan by the webhook.
CREATE TABLE subscriptions (
    id                     BIGSERIAL PRIMARY KEY,
    user_id                BIGINT  NOT NULL UNIQUE,
    creem_customer_id      TEXT,
    creem_subscription_id  TEXT,
    product_id             TEXT,
    plan                   TEXT    NOT NULL,
    status                 TEXT    NOT NULL,
    current_period_end     BIGINT,            -- unix ms
    updated_at             BIGINT  NOT NULL,  -- unix ms
    last_event_at          BIGINT  NOT NULL   -- created_at of the newest event applied, unix ms
);
CREATE INDEX subscriptions_customer ON subscriptions (creem_customer_id);
CREATE INDEX subscriptions_subscription ON subscriptions (creem_subscription_id);

-- Webhook events already handled: a redelivery of the same id changes nothing.
CREATE TABLE billing_events (
    event_id     TEXT    PRIMARY KEY,
    event_type   TEXT    NOT NULL,
    received_at  BIGINT  NOT NULL
);
