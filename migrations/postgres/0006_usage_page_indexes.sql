-- Pages of one user's or one key's recent requests (`/api/usage/requests`, the
-- dashboard) are range scans on these, not scans of everyone's records.
CREATE INDEX usage_records_user_page ON usage_records (user_id, id);
CREATE INDEX usage_records_key_page ON usage_records (key_id, id);
