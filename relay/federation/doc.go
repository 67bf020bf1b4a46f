// Package federation lets home servers of different domains relay for
// each other's users: the transport between servers, the
// FederationService they call on each other (schema/federation.capnp),
// and the durable outgoing queues that carry deliveries to a server that
// is down until it is back.
//
// What a call means for this server's users (which keys are local, which
// live elsewhere, how a client's call is split) is package relay's: it
// implements Handler for what peers ask, and calls Federation's methods
// for what its clients ask of users of other domains.
//
// # Transport
//
// QUIC v1, TLS 1.3 with client certificates (mutual TLS), ALPN
// "qpq-fed/1" (ALPN); one bidirectional stream per connection carries
// two-party Cap'n Proto RPC whose bootstrap capability is
// FederationService. Both sides present their home server's certificate
// (the one clients pin) and pin the other's: a server accepts a
// connection only from a certificate whose SHA-256 an operator configured
// for a peer domain, and dials a peer only if it presents the configured
// one. An unknown certificate is refused with a log line and a
// connection close whose reason says what to configure (RefusedCode).
//
// # Calls
//
// Every call names its origin domain, which must be the domain configured
// for the certificate that authenticated the connection (else
// permission-denied, and a log line), and hops: 1 from the server that
// first sends a request, one more for each server that passes it on. A
// server refuses to pass on a request whose hops reached MaxHops, so a
// routing loop ends. Each peer is rate limited (Config.Rate).
//
// Deliveries to users of another domain (relayEnqueue,
// relayBatchEnqueue) are never sent from the client's call: package relay
// commits them to the store's queue for that domain (store.Deliver) in
// the transaction that acknowledges the client, and a sender per peer
// delivers that queue in order, one delivery at a time, retrying with
// exponential backoff (RetryMin to RetryMax, jittered) while the peer is
// unreachable or busy. A delivery leaves the queue only once the peer
// committed it, or refused it for good (invalid-argument,
// permission-denied, not-found, already-exists, failed-precondition):
// that is logged and counted, never silent. Each delivery carries a relay
// id (stream, seq): stream is random per start of the sending server, seq
// its position in the queue, and the receiving server applies a (stream,
// seq) at most once (store.Incoming), so a delivery whose answer was lost
// and that is sent again arrives once.
//
// Reads (proxyFetchKeyPackage, proxyFetchHybridKey, proxyResolveUser,
// proxyResolveIdentity) and proxyCreateChannel are made while the client
// waits; an unreachable peer is failed-precondition to the client (to
// resolveIdentity, an empty name).
package federation
