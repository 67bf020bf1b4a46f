// Package twoparty speaks Cap'n Proto's standard two-party RPC protocol
// (rpc.capnp) over a byte stream, for interfaces whose parameters and
// results carry no capabilities: every interface of quicproquo
// (NodeService, FederationService). It replaces capnp-go's rpc.Conn on
// every quicproquo link; capnp-go still provides the message encoding, the
// generated stubs and the method dispatch (server.Server).
//
// # Why not capnp-go's rpc.Conn
//
// rpc.Conn implements the whole protocol (capabilities in messages,
// embargoes, promise resolution), and a call costs for it: each message
// leaves through a send-queue goroutine, each Return is resolved on a new
// goroutine, and each Finish is sent 250 ms after the Return from a
// goroutine and a timer of its own (capnp-go v3.1.0-alpha.2, a workaround
// for a race in pipelining on results). An interface without capabilities
// needs none of that. Measured on the home server benchmark, rpc.Conn
// was about a third of the CPU of an acknowledged message (docs/PERFORMANCE.md).
//
// # What a Conn does
//
// A Conn is symmetric, like rpc.Conn: it may offer a bootstrap capability
// to the peer and call the peer's. It speaks level 0 of the protocol plus
// promise pipelining on a bootstrap answer, which is what standard clients
// (capnp-go, the C++ implementation) need to call a bootstrap interface:
//
//   - Bootstrap: answered at once with the bootstrap capability as export 0
//     (or an exception when the Conn offers none). The answer stays until
//     the peer's Finish; calls may target it (promisedAnswer, no transform)
//     or the import (importedCap 0).
//   - Call: dispatched in arrival order to the bootstrap capability; the
//     Return carries results or an exception whose reason is the error's
//     text (the stable codes of package errcode). A Call whose parameters
//     hold capabilities, or that asks for results elsewhere, is answered
//     with an exception. A Finish that arrives before the Return cancels the
//     call's context.
//   - Return sets noFinishNeeded: results hold no capabilities, so the
//     answer is dropped when the Return is written and a later Finish for it
//     is ignored, as rpc.capnp specifies. Our own client honours the flag
//     and sends no Finish, so a call is two messages, not three.
//   - Release of export 0 is accepted and ignored (the bootstrap lives as
//     long as the Conn); Abort ends the Conn; any other message is echoed
//     back as Unimplemented.
//
// Outgoing calls are written by the calling goroutine; frames that other
// goroutines queue while a write is in progress leave together in the
// next stream write (write combining, no writer goroutine). While other
// calls are being served, a writer first yields to let Returns that
// completed with its own (one group commit wakes them all) join its
// write; while other calls of its own are in flight, it yields to let
// calls being made at the same moment join it. Each message
// is framed straight into the write buffer and then released to capnp's
// buffer pool, so a steady stream of calls allocates no message buffers.
// One reader goroutine per Conn reads messages, dispatches calls and
// resolves answers. What it must answer itself (a bootstrap's Return, a
// refused call's, a Finish, an Unimplemented echo) it queues or hands to
// a writer goroutine, never waiting for the peer to read: a peer that
// stops reading cannot stop the reader, and one that keeps asking while
// reading nothing ends the Conn (ErrPeerNotReading). Its Abort for a
// protocol violation is given a second. A call's context ending before
// its Return sends a Finish and fails the call.
//
// # Limits
//
// A message above Options.MaxMessageSize ends the Conn, as does a protocol
// violation (a reused question id, more than Options.MaxAnswers answers
// held open, a Return for an unknown question), after an Abort saying why.
// Calls in flight are bounded by the bootstrap capability the caller
// supplies (rpc.ServeStream counts them).
package twoparty
