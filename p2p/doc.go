// Package p2p is a node's direct link to other nodes: a libp2p host on
// QUIC whose identity is the node's Ed25519 identity key, NodeService RPC
// between nodes on the protocol /quicproquo/p2p/1, the links it keeps,
// circuit relay v2 (reservations at home servers; the relay service home
// servers run) with hole punching, and endpoint records for the internet.
//
// # Identity
//
// A node's libp2p peer ID is the identity multihash of its Ed25519 key,
// so the key and the ID are one fact: PeerID and IdentityKey convert.
// The libp2p handshake (TLS 1.3 in QUIC) proves the remote's key, so the
// answering side knows its caller without tokens.
//
// # Protocol /quicproquo/p2p/1
//
// One libp2p stream carries standard two-party Cap'n Proto RPC (stream
// framing, messages up to MaxRPCMessage); the answering node's bootstrap
// capability is NodeService (schema/node.capnp), bound to the caller's
// identity by Config.Service (package peersvc implements what a node
// answers for itself). The caller opens the stream; Host.NodeService
// caches one RPC connection per peer and reopens it when it breaks.
// Relayed (limited) connections carry RPC like direct ones.
//
// # Links
//
// Host.AddPeer keeps a link to a peer: libp2p reuses one connection per
// peer for every stream; a libp2p ping every LinkConfig.Heartbeat closes a
// connection whose ping is unanswered after DeadAfter (QUIC's idle
// timeout alone would take 30 s); a peer that is down is redialed with
// exponential backoff; a peer reached only through a relay gets direct
// dials with backoff, and the relayed connection is closed once a direct
// one is up. Every change is reported as a LinkEvent (direct, relayed,
// down) to Config.OnLink.
//
// # Relays and hole punching
//
// A home server enables RelayService (circuit relay v2, every resource
// bounded). A node names its home servers in Config.Relays, keeps a
// reservation at each while it has a direct link to it, and advertises
// <relay>/p2p/<relay id>/p2p-circuit addresses in AddrInfo. DCUtR hole
// punching is enabled; libp2p attempts it once a relayed connection
// exists and both sides know public addresses of their own. Our own
// direct retries cover what it does not (a firewall that opens later, a
// LAN path that comes back).
//
// # Endpoint records
//
// Publish keeps the node's record (JSON of peer.AddrInfo, see
// EncodeEndpoint) current in a Directory, the home server's
// publishEndpoint/resolveEndpoint; Resolve fetches and checks a peer's.
//
// What the host never does: listen on addresses it was not given, use
// libp2p's built-in mDNS (package p2p/mdns does discovery), contact
// public bootstrap peers, or map ports with UPnP/NAT-PMP.
package p2p
