// Package server runs a home server: the relay's NodeService over QUIC, a
// libp2p host with the circuit relay v2 service, mDNS announcement, and
// federation with the home servers of other domains.
//
// A home server is a node run headless (`qpq serve`): it has an identity
// key like any node (identity.key and hybrid.key in its data directory, see
// node/identity), and its libp2p peer ID is that key's. What it adds is the
// store-and-forward NodeService for registered users (package relay).
//
//	Start ─► relay.Open (DATA/qpq.db; federation when configured)
//	      ├► rpc.Listen (QUIC, ALPN capnp, DATA/tls/cert.pem)
//	      ├► metrics listener (Prometheus text), when configured
//	      ├► admin socket DATA/admin.sock (online backups; package admin)
//	      ├► p2p.New (QUIC, circuit relay v2 service; no RPC protocol)
//	      └► mdns.Start (announces _quicproquo._udp with server= and domain=)
//	Run   ─► serves until its context ends, then closes all of it
//
// The libp2p host serves only the circuit relay (and libp2p's identify and
// ping): clients reach NodeService over QUIC with session tokens, never
// over the P2P link, so an unregistered key cannot use the server's store.
// Nodes find the server's AddrInfo in its mDNS record (peer= and the SRV
// port), in what `qpq serve` prints at start (Info.P2P), or from its
// operator.
//
// The package does not parse flags or files: cmd/qpq turns those into a
// Config.
package server
