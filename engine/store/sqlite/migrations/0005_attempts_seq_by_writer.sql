-- The writer numbers finished attempts in its batch insert (see
-- sqlcore's insertSeqAttempts): the trigger's UPDATE per attempt, a second
-- write of every row on the hot path, goes.
DROP TRIGGER attempts_seq;
