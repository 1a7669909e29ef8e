-- Every API rule gets an identity that is never reused (a re-created rule
-- of the same name gets a new one), and every delivery records the rule
-- that created it: an attempt runs only while that same rule has the name.
-- '' on deliveries written before: they keep the name match.
ALTER TABLE rules ADD COLUMN rule_id TEXT NOT NULL DEFAULT '';
UPDATE rules SET rule_id = 'rul_' || lower(hex(randomblob(16)));
ALTER TABLE deliveries ADD COLUMN rule_id TEXT NOT NULL DEFAULT '';
