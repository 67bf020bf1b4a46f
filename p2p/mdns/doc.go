// Package mdns finds quicproquo nodes on the local network with multicast
// DNS (RFC 6762) and DNS service discovery (RFC 6763), and makes this node
// findable.
//
// # Records
//
// A node announces the service instance <username>._quicproquo._udp.local.
// on every interface it runs on:
//
//	PTR  _quicproquo._udp.local.           → <username>._quicproquo._udp.local.
//	SRV  <username>._quicproquo._udp.local. → qpq-<id prefix>.local., port = libp2p QUIC port
//	A    qpq-<id prefix>.local.            → its IPv4 addresses on that interface
//	AAAA qpq-<id prefix>.local.            → its global IPv6 addresses there
//	TXT  ver=1 id=<hex identity key> user=<username> peer=<peer ID>
//	     [server=<host:port> domain=<d>]   (when it serves clients)
//
// so a peer dials /ip4/<A>/udp/<port>/quic-v1/p2p/<peer>. A record whose
// TXT id and peer disagree, whose ver is not 1, or that breaks a limit is
// dropped. mDNS is unauthenticated: a record only says where to dial; the
// libp2p handshake then proves the peer's key.
//
// # Timing
//
// Waiting for a periodic browse would make a new node visible only after
// the next query of each peer. Instead a node, at start:
//
//   - multicasts an unsolicited announcement (three times, 1 s apart, as
//     RFC 6762 §8.3 suggests), which every listening peer takes in at once;
//   - queries immediately, and every peer answers at once.
//
// After that it queries with exponential backoff up to BrowseMax; peers
// not heard from for ExpireAfter are dropped. On Close a node multicasts
// a goodbye (TTL 0), and peers drop it at once. The table holds at most
// MaxPeers; a peer first heard while it is full is ignored until a place
// frees up.
//
// # Sockets
//
// hashicorp/mdns (v1.0.7) builds the records (its MDNSService zone, per
// interface, with explicit IPs and host name so that nothing is looked
// up). Its server is not used: it answers every query only by unicast and,
// with one socket per interface, hears other interfaces' queries (Linux
// IP_MULTICAST_ALL) and would answer them with the wrong addresses. This
// package instead runs one listener on 224.0.0.251:5353 that joins the
// group on each chosen interface and learns each packet's interface
// (IP_PKTINFO), answering QM queries by multicast and legacy/QU queries by
// unicast from port 5353; and one query socket per interface, bound to
// its address, for queries, announcements and the unicast answers to
// them. IPv4 only for now.
//
// Interfaces are those Config.Interfaces names (the operator's
// --mdns-iface), or else every interface that is up, multicast-capable,
// not loopback and has an IPv4 address; they are rescanned with every
// browse, and announcements repeat when an address changes.
package mdns
