// Package node is the messenger: one Node per device, holding the user's
// identity, conversations, history and outbox in one data directory, and
// reaching peers directly on the LAN (mDNS, libp2p over QUIC) or through
// their home servers.
//
// Open loads or creates the identity (node/identity) and the state in
// DATA/node.db (one bbolt file: conversations and MLS group states,
// KeyPackage bundles, history, outbox, names, certificate pins, hybrid key
// cache, the peer service's store), and starts the P2P host and mDNS. Run
// does the work until its context ends; Close stops everything. The
// commands (DM, CreateGroup, Invite, Remove, Leave, UpdateKey, Send, …)
// are methods; what happens is reported as Events, in order, through
// Config.OnEvent — the JSON lines of `qpq chat --json` (docs/CLI.md).
//
// # Sending
//
// A text becomes an MLS application message (node/conv), committed to
// disk with the new group state and one outbox item per recipient
// (node/outbox). The outbox delivers each item, sealed at that moment for
// the recipient's X-Wing hybrid key (package seal; the key comes from the
// peer itself over the P2P link, or from the home server, and is cached):
// first over the P2P link (an open link, or a dial to the addresses mDNS
// or the configuration gave), bounded by DirectTimeout; then to the
// recipient's home server. A Sent event reports which path took it. The
// plaintext sealed is the MLSMessage itself (PrivateMessage,
// PublicMessage or Welcome), nothing around it.
//
// # Receiving
//
// Everything arrives in the recipient's default inbox: the P2P inbox that
// peers fill over the link (p2p/peersvc), and the home server's, read with
// peekWait (node/home). Each inbox is processed in seq order, and
// acknowledged only after the outcome (state, history, replies) is on
// disk. A message that comes by both paths is shown once.
//
// # Names
//
// A user name resolves to an identity key through the names already known,
// mDNS, then the home server's resolveUser; an identity's name comes from
// mDNS, the peer itself (resolveIdentity over the link), or the server.
// The first binding of a name stands (node/names).
package node
