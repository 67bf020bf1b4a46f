// Package store is the durable state of a quicproquo home server (or of a
// node answering NodeService for itself): inboxes, key packages, hybrid
// keys, 1:1 channels, accounts, session tokens and published endpoints, in
// one bbolt file.
//
// Every write that a caller acknowledges is committed (fsync) before the
// method returns, and concurrent writers share one commit (group commit):
// a single goroutine commits everything that waits the moment the previous
// commit ends. The functions follow bbolt DB.Batch's contract (they may
// run more than once and assign their results afresh on every run), but
// not its timer, which on Linux turns a sub-millisecond MaxBatchDelay into
// a millisecond per write (see commit.go).
//
// # Queues
//
// Inboxes and key packages are FIFO queues with a persistent counter: the
// sequence number of an inbox (recipient, channel) strictly increases and
// is never reused, also after fetch, ack and restart, because the counter
// lives in its own record that draining never deletes.
//
// # Layout
//
// Buckets and keys (all integers big-endian):
//
//	queues    queueID                 -> queueState  v1 | next u64 | depth u64
//	items     queueID | seq u64       -> payload bytes
//	channels  channelID [16]          -> channel     v1 | lo [32] | hi [32] | created i64
//	users     username                -> user        v1 | identity [32] | created i64 | record
//	idents    identity [32]           -> username
//	hkeys     identity [32]           -> hybrid public key
//	tokens    selector [16]           -> token       v1 | verifier [16] | identity [32] | expiry i64
//	sessions  identity | expiry | sel -> (empty)     index to cap sessions per identity
//	endpoints identity [32]           -> endpoint    v1 | published i64 | nodeAddr
//	remotes   identity [32]           -> remote      v1 | resolved u8 | updated i64 | len u8 | domain | name
//	fedin     origin | 0x00 | stream  -> relay mark  v1 | last seq u64 | updated i64
//	lastkp    identity [32]           -> the last-resort key package (served when the queue is empty, never removed)
//	meta      name                    -> server secrets and the layout version
//
// queueID is identity | 0x00 for a default inbox, identity | 0x01 |
// channel for a channel inbox, identity | 0x02 for the key-package queue,
// and SHA-256("quicproquo/relay-queue/v1" 0x00 domain) | 0x03 for the
// deliveries waiting for another domain's server (RelayItem records), so
// no queue's id is a prefix of another's.
//
// # Federation
//
// remotes maps identities of other domains to their home (package
// relay/federation routes calls for them there); Deliver commits a
// payload to local inboxes and other servers' queues in one transaction,
// and for a delivery relayed here records (origin, stream, seq) in fedin
// in that same transaction, so a repeat is recognized however often it is
// sent.
//
// The store does not authenticate anyone; callers (package relay) decide
// who may do what and pass identities in.
package store
