// Package conv is a node's conversations: one MLS group each, a 1:1 DM or
// a named group, kept durably in the node's bbolt file, and the rules that
// keep every member in the same epoch.
//
// A Manager takes every MLS message that reaches the node (Handle: the
// sealed envelope already opened) and every conversation command of the
// user (CreateDM, CreateGroup, Invite, Remove, Leave, UpdateKey, Send). Each
// step commits in one bbolt transaction everything it changes: the group
// state, the history, the messages it sends (node/outbox EnqueueTx, one
// item per recipient, sealed later at delivery), messages kept for later.
// Nothing is sent that the disk does not know, and a crash never leaves a
// group state without the messages that announce it. The package does no
// networking: the node fetches KeyPackages and hybrid keys, and delivers.
//
// # Commit discipline
//
// One member commits per epoch: the committer is the member at the lowest
// leaf index whose removal is not proposed this epoch (for a DM, the
// initiator, who created the group at leaf 0). Other members ask for
// changes with MLS proposals sent to every member — Add (by KeyPackage)
// for an invite, Remove for a removal and, of their own leaf, for leaving,
// Update for a new leaf key — and the committer commits every valid cached
// proposal, by reference, CommitDelay after the first one arrives (so a
// burst becomes one Commit). The committer's own changes go into its Commit
// by value. A committer that leaves proposes its own removal, which makes
// the next member the committer. The committer merges its Commit at once,
// in the transaction that enqueues it to every member (and the Welcome to
// new ones), so it cannot fork by crashing between the two.
//
// A Commit of another member for an epoch already left (mls.ErrStaleCommit:
// a buggy or malicious member, or two members that each believed itself
// the committer while proposals crossed) loses: the first Commit processed
// wins, the conflict is logged and reported as a Problem, never silently.
// Proposals of this member that the winning Commit did not apply
// (mls.CommitResult.Retry) are proposed again in the new epoch.
//
// While proposals wait for their Commit, RFC 9420 forbids sending
// application data; texts written then are held (durably) and sent right
// after the Commit.
//
// # Duplicates and order
//
// A message may arrive twice (a direct link and a home server; a retry
// after a crash). Application messages are shown once per message id
// (node/history); a message whose key was already used (mls.ErrReplay) or
// that this member sent (mls.ErrOwnMessage) is dropped silently; the
// SHA-256 of the last 32 Commits applied per group catches copies of older
// Commits. A Welcome for a KeyPackage already used finds no bundle and is
// dropped. Messages of a later epoch (mls.ErrFutureEpoch) or of a group
// not joined yet are kept (MaxDeferredPerGroup, MaxDeferredTotal,
// MaxDeferredAge) and processed again after every Commit and join.
// Application messages of the last PastEpochs epochs still decrypt.
package conv
