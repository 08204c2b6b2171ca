-- No query reads usage_records by key and time: a key's pages use
-- usage_records_key_page (key_id, id), reports usage_records_time. The index
-- was one more b-tree insert on every usage row written (benches/README.md,
-- "Instructions per request").
DROP INDEX IF EXISTS usage_records_key_time;
