// Package peersvc is the NodeService a node serves for itself to its
// peers over the P2P link (/quicproquo/p2p/1), and the bbolt store behind
// it.
//
// The caller of every method is the peer the P2P link authenticated
// (Service.Client binds it); the auth field is ignored. A node answers
// only for itself:
//
//	fetchKeyPackage      pops one of its own key packages; when none is left, its
//	                     last-resort one (kept), else empty
//	fetchHybridKey(s)    its own X-Wing key (other keys: not-found, or empty in the batch form)
//	resolveUser          its own username → its identity key (other names: empty)
//	resolveIdentity      its own key → its username (other keys: empty)
//	enqueue, batchEnqueue into its own inbox; every recipient must be this node
//	                     (permission-denied otherwise); the sender is recorded
//	createChannel        the 1:1 channel between the caller and this node (see channel.go)
//	health               "ok"
//
// Everything else is failed-precondition: not offered over the P2P link.
// Errors carry the codes of rpc/errcode.
//
// The node consumes its P2P inbox through Store: Peek, Ack and
// InboxChanged. Every write is committed to disk before the method that
// made it returns, so an enqueue's seq reaches the sender only once the
// delivery is durable. Seqs strictly increase for the life of the file.
//
// This package does not dial anyone or listen anywhere; package p2p
// carries the RPC connections.
package peersvc
