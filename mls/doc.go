// Package mls implements the Messaging Layer Security protocol, RFC 9420,
// written from the RFC and checked against the official interoperability
// test vectors in mls/testdata and the scenario scripts of the IETF
// interop harness (cmd/mls-interop).
//
// A member's view of a group is a Group. A messenger uses it like this:
//
//   - Identity: Ed25519Identity turns the node's Ed25519 identity key into
//     the signer and BasicCredential of this project (the identity is the
//     32-byte public key, which is also the leaf's signature key);
//     Config.ValidateCredential = ValidateEd25519Identity holds every
//     member to that rule. Member.Identity reads it back.
//   - KeyPackages: NewKeyPackage makes one and keeps its private keys in a
//     KeyPackageBundle, which MarshalBinary / UnmarshalKeyPackageBundle
//     persist. A bundle is single-use: JoinWelcome deletes its keys —
//     unless it carries the LastResort extension.
//   - Groups: NewGroup creates one; Group.Commit adds, removes and updates
//     members and returns a PendingCommit (the Commit, the Welcome for new
//     members, a signed GroupInfo) that the group holds until the caller
//     confirms the delivery service accepted it (MergePendingCommit) or
//     refused it (DiscardPendingCommit). JoinWelcome joins from a Welcome;
//     JoinExternal joins (or resyncs) by external Commit from a GroupInfo.
//   - Proposals: Group.Propose and ProposeUpdate send them; received ones
//     are cached (Group.Proposals, DropProposal) and a Commit by default
//     covers every valid cached proposal, skipping invalid ones as RFC 9420
//     §12.2 asks (PendingCommit.Skipped). CommitResult.Proposals says what
//     a Commit applied; CommitResult.Retry hands a member back its own
//     proposals that a new epoch voided.
//   - Messages: Group.Encrypt protects application data; Group.Process
//     handles every incoming group message. Errors say what to do with a
//     message (errors.go): ErrFutureEpoch — keep it until the next Commit;
//     ErrStaleCommit — another Commit won that epoch; ErrReplay,
//     ErrOwnMessage — already handled; ErrEpochExpired,
//     ErrGenerationTooOld — too late (forward secrecy); the rest — forged
//     or corrupt. A message that fails any check leaves the group unchanged.
//   - Late messages: application messages of the Config.PastEpochs epochs
//     before the current one (default 2) still decrypt; only those epochs'
//     secret trees and sender-data secrets are kept for it.
//   - Persistence: Group.MarshalState / UnmarshalState save and restore
//     everything, a pending Commit and past epochs included, in a
//     versioned format.
//   - Successors: Group.Branch and Reinitialize create a subgroup or the
//     group that replaces one whose ReInit was committed;
//     Group.JoinSuccessor joins such a group and checks it against the old.
//
// Messages travel as MLSMessage (DecodeMLSMessage, MLSMessage.Encode).
// Decoding is strict and bounded by the limits in limits.go; errors wrap the
// sentinels in errors.go and never carry key material. A Group is not safe
// for concurrent use.
//
// Subpackages hold the layers that stand on their own: codec (the TLS
// presentation language), treemath (array tree arithmetic) and cipher (the
// cipher suites and the labeled crypto helpers).
package mls
