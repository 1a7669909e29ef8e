-- Marks of the writes that must not run twice (sqlcore.TxOnce): each
-- writes a random token here in its transaction. When the connection
-- drops at COMMIT, the token, not only the transaction id, says whether
-- it committed: after a server crash, an id whose records never reached
-- the disk may be given to another transaction, whose status would
-- answer for it. Marks are kept an hour (the check takes seconds); one
-- TxOnce in 64 deletes up to 100 older ones.
CREATE TABLE commit_marks (
	token      BIGINT PRIMARY KEY,
	created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX commit_marks_created ON commit_marks (created_at);
