// Package relay is the quicproquo home server: the NodeService
// (schema/node.capnp) implementation that stores and forwards ciphertext
// for registered users.
//
// A Relay owns the durable state (relay/store), the accounts (relay/auth),
// the rate limiters (relay/ratelimit) and the Prometheus metrics. Each
// connection gets its own Service, which knows who is calling through an
// Authenticator: TokenAuthenticator checks the session token in a call's
// Auth (clients over QUIC; one per connection, remembering the token it
// last accepted, see auth.SessionCache). A transport that authenticates
// its peer itself can plug in one that names that peer and turn accounts
// off (ServiceOptions); a node's own P2P service is package p2p/peersvc.
//
// # Semantics (see docs/PROTOCOL.md for the full contract)
//
//   - Every method except health and opaque* requires a valid caller.
//   - Keys are 32 bytes and every version field is 1, else invalid-argument.
//   - Inboxes are (recipient, channel). enqueue needs an empty channel (the
//     default inbox) or a channel whose members are the caller and the
//     recipient; fetch, fetchWait, peek and ack only the caller's own.
//   - Writes are on disk before the reply; seq never repeats in an inbox.
//   - fetchWait returns at once when messages wait, else when one arrives
//     (woken by the commit, no polling), else empty after min(timeoutMs,
//     MaxFetchWait).
//   - Calls on one connection start one at a time in arrival order.
//     fetchWait and peekWait wait aside so the connection stays usable;
//     enqueue and batchEnqueue queue their write for the next commit in
//     arrival order and then wait aside, so pipelined enqueues share
//     commits and keep their seq order.
//
// # Federation
//
// With Config.Federation, users of other domains are served through
// their home servers (package relay/federation carries the calls):
// resolveUser("name@domain") asks that domain's server and records where
// the key lives; calls naming such a key go there (reads while the client
// waits; deliveries through a durable queue per domain, acknowledged once
// queued). The home server of a pair's lower key decides their 1:1
// channel. federate.go holds these rules and the Handler that answers
// other servers.
package relay
