-- The trace context of the event that last armed a timer (docs/tracing.md),
-- as deliveries.trace holds it: the deliveries the timer makes when it
-- fires, hours later and in whichever process, continue that trace. A
-- constant default: existing rows get '' without rewriting the table.
ALTER TABLE timers ADD COLUMN trace TEXT NOT NULL DEFAULT '';
