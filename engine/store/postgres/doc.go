// Package postgres is the erpflow store on PostgreSQL (lib/pq through
// sqlx), for several engine processes sharing one database.
//
// Workers claim due deliveries in batches with FOR UPDATE SKIP LOCKED under
// a lease; a completion applies only while its lease holds (fencing), and a
// delivery whose worker died becomes claimable when its lease expires.
// Inserts, requeues and releases NOTIFY erpflow_deliveries on commit, and
// Wakeups (a LISTEN that reconnects by itself) wakes the workers of every
// process. InsertEventsTx writes events inside the host's own transaction
// (transactional outbox).
package postgres
