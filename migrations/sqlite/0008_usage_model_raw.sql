-- A model no pool lists and no price names is stored as `other`; what the
-- client sent is kept here, bounded and without control characters, so
-- client-chosen text never becomes a key of usage_daily.
ALTER TABLE usage_records ADD COLUMN model_raw TEXT;
