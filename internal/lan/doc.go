// Package lan builds throwaway LANs out of Linux network namespaces, for
// tests and benchmarks that must never touch the machine's real network.
//
// A LAN is one "switch" namespace holding a bridge, plus one namespace per
// node joined to the bridge by a veth pair:
//
//	qpq-<pid>-<n>-sw   br0 ── p0 ─┐  p1 ─┐  …
//	qpq-<pid>-<n>-n0              └ eth0 (10.77.0.1/24)
//	qpq-<pid>-<n>-n1                       └ eth0 (10.77.0.2/24)
//
// Keeping the bridge in its own namespace means nothing at all is created in
// the root namespace, and every LAN can use the same subnet without
// colliding with another LAN. Each node namespace has a multicast route on
// eth0 (mDNS needs one) and a loopback.
//
// Faults a test can inject:
//
//   - Cut(i) detaches node i's port from the bridge: its packets vanish
//     silently and its interface keeps carrier, like a link dying somewhere
//     beyond the first hop. Restore(i) reattaches it.
//   - Block(i, j) makes nodes i and j drop each other's packets on input
//     (an "ip rule … blackhole" per source address, ahead of local
//     delivery), while both still reach every other node. Senders see no
//     error, as behind a stateful firewall or NAT. Unblock(i, j) lifts it.
//
// Names start with "qpq-<pid>-", the pid of the owning process. New removes
// stale namespaces (those whose owner is dead) before building, so a crashed
// run never leaves anything behind for long; Close removes a LAN and is
// idempotent. Everything is done with iproute2's ip(8); no iptables.
//
// Creating namespaces needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN);
// Available reports why a LAN cannot be built here. Package lantest wraps
// this for Go tests (cleanup on failure and panic, child processes inside
// namespaces); scripts/lan is the command-line front end (cmd/qpq-lan).
package lan
