// Package mls implements the Messaging Layer Security protocol, RFC 9420,
// written from the RFC and checked against the official interoperability
// test vectors in mls/testdata.
//
// A member's view of a group is a Group:
//
//   - NewKeyPackage makes a KeyPackage and keeps its private keys in a
//     KeyPackageBundle until a Welcome uses it.
//   - NewGroup creates a one-member group; Group.Commit adds, removes and
//     updates members (proposals by value, and those received this epoch by
//     reference) and returns a PendingCommit with the Commit, the Welcome
//     for new members and a signed GroupInfo. The group moves to the new
//     epoch only when the caller confirms the Commit was accepted
//     (Group.MergePendingCommit).
//   - JoinWelcome joins from a Welcome; JoinExternal joins by external
//     Commit from a GroupInfo (Group.GroupInfo publishes one).
//   - Group.Process handles every incoming group message: application data
//     comes back decrypted, proposals are cached, Commits advance the epoch.
//     A message that fails any check leaves the group unchanged.
//   - Group.Encrypt sends application data; Group.Propose and
//     Group.ProposeUpdate send proposals.
//   - Group.MarshalState and UnmarshalState persist the whole state.
//
// Messages travel as MLSMessage (DecodeMLSMessage, MLSMessage.Encode).
// Decoding is strict and bounded by the limits in limits.go; errors wrap the
// sentinels in errors.go. Credentials are carried, not judged: validating
// them is the application's authentication service's job (RFC 9420 §5.3.1).
//
// Subpackages hold the layers that stand on their own: codec (the TLS
// presentation language), treemath (array tree arithmetic) and cipher (the
// cipher suites and the labeled crypto helpers).
package mls
