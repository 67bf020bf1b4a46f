// Package rpc carries NodeService (schema/node.capnp) over QUIC: the
// listener of a home server, the dialer of a client with certificate
// pinning, and a typed client that wraps any NodeService capability.
//
// # Wire
//
// QUIC v1 with TLS 1.3 and ALPN "capnp". A client opens one bidirectional
// stream per connection; it carries standard two-party Cap'n Proto RPC
// (unpacked stream framing) whose bootstrap capability is NodeService.
// The server accepts no other stream.
//
// # Trust
//
// A home server's certificate is usually self-signed (LoadOrCreateCertificate
// makes one on first start). Clients do not use CAs: they pin the SHA-256
// fingerprint of the server's DER certificate (Fingerprint). Dial refuses a
// server whose fingerprint differs from the pin with a
// *FingerprintMismatchError; with TrustOnFirstUse it accepts any
// certificate and reports the fingerprint it saw, for the caller to store.
//
// # Limits
//
// A server connection refuses a Cap'n Proto message above MaxMessageSize
// and more than MaxPendingCalls calls in flight (resource-exhausted), so a
// peer cannot queue unbounded work.
//
// ServeStream and NewConn run the same RPC over any other byte stream (a
// libp2p stream, for instance), so one Client type serves every path.
package rpc
