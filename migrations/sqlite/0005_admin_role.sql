-- Admin is a role the operator grants (`bluesminds users grant-admin`), stored
-- here; it is never derived from an email address, which sign-up does not verify.
ALTER TABLE users ADD COLUMN is_admin BIGINT NOT NULL DEFAULT 0;

-- Emails are stored trimmed and lowercase, and unique in any letter case, so
-- `Boss@Example.com` cannot be a second account beside `boss@example.com`.
-- (If two existing accounts differ only in case, this fails: merge them first.)
UPDATE users SET email = lower(trim(email));
CREATE UNIQUE INDEX users_email_lower ON users (lower(email));
