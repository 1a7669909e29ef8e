-- The trace context of the emit that created a delivery (docs/tracing.md):
-- its W3C traceparent, then a space and its tracestate when it has one; ''
-- when the emit carried none. An attempt made later, or by another
-- process, continues that trace, and the webhook sends it on. A constant
-- default: existing rows get '' without rewriting the table.
ALTER TABLE deliveries ADD COLUMN trace TEXT NOT NULL DEFAULT '';
