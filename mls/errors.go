package mls

import (
	"errors"
	"fmt"
)

// Errors callers can branch on. Functions wrap them with detail; match with
// errors.Is. None of them carries key material.
//
// What a messenger typically does with the outcomes of Group.Process:
//
//	ErrFutureEpoch                  buffer the message, retry after the next Commit
//	ErrStaleCommit, ErrStaleProposal a competing Commit won that epoch; drop it
//	ErrReplay, ErrOwnMessage         a copy of something already handled; drop it
//	ErrEpochExpired, ErrGenerationTooOld
//	                                too late to decrypt (forward secrecy); drop it
//	ErrNotMember, ErrBadSignature, ErrBadMembershipTag, ErrBadConfirmationTag,
//	ErrDecrypt, ErrMalformed        forged or corrupted; drop it (and maybe log)
//
// The epoch errors (ErrFutureEpoch, ErrStaleCommit, ErrStaleProposal,
// ErrEpochExpired) also match ErrWrongEpoch.
var (
	// ErrMalformed: bytes that do not decode as the expected structure, or a
	// structure that breaks a syntactic rule of RFC 9420.
	ErrMalformed = errors.New("mls: malformed message")
	// ErrWrongGroup: a message for another group.
	ErrWrongGroup = errors.New("mls: message for another group")
	// ErrWrongEpoch: a message for another epoch of this group, or a group
	// that cannot take part in any epoch yet (an unmerged external join) or
	// any more (re-initialized).
	ErrWrongEpoch = errors.New("mls: message for another epoch")
	// ErrFutureEpoch: a message for an epoch after the group's current one.
	// The group is unchanged; process it again after the next Commit.
	ErrFutureEpoch = fmt.Errorf("%w: from a future epoch", ErrWrongEpoch)
	// ErrStaleCommit: a Commit for an epoch the group has left, i.e. another
	// Commit for that epoch was processed first and won. The group is
	// unchanged.
	ErrStaleCommit = fmt.Errorf("%w: commit for an epoch already left (another commit won)", ErrWrongEpoch)
	// ErrStaleProposal: a proposal for an epoch the group has left; it can
	// no longer be committed. Its sender learns from the Commit that it
	// was not applied (CommitResult.Retry) and may propose it again.
	ErrStaleProposal = fmt.Errorf("%w: proposal for an epoch already left", ErrWrongEpoch)
	// ErrEpochExpired: an application message of a past epoch whose keys
	// are no longer kept (Config.PastEpochs).
	ErrEpochExpired = fmt.Errorf("%w: past epoch no longer kept", ErrWrongEpoch)
	// ErrReplay: a message already processed (its key was used, or the
	// Commit is the one that began the current epoch, or the proposal is
	// already cached).
	ErrReplay = errors.New("mls: message already processed")
	// ErrNotMember: the sender is not a member of the group in the
	// message's epoch (e.g. it was removed).
	ErrNotMember = errors.New("mls: sender is not a member")
	// ErrRemoved: this member was removed from the group; it can still
	// decrypt application messages of the epochs it was in, nothing else.
	ErrRemoved = errors.New("mls: removed from the group")
	// ErrBadSignature: a signature that does not verify.
	ErrBadSignature = errors.New("mls: invalid signature")
	// ErrBadMembershipTag: a PublicMessage whose membership tag is wrong.
	ErrBadMembershipTag = errors.New("mls: invalid membership tag")
	// ErrBadConfirmationTag: a Commit or GroupInfo whose confirmation tag
	// does not match the epoch it leads to.
	ErrBadConfirmationTag = errors.New("mls: invalid confirmation tag")
	// ErrDecrypt: a ciphertext that does not decrypt.
	ErrDecrypt = errors.New("mls: decryption failed")
	// ErrInvalidLeafNode: a LeafNode that fails validation (RFC 9420 §7.3).
	ErrInvalidLeafNode = errors.New("mls: invalid leaf node")
	// ErrInvalidKeyPackage: a KeyPackage that fails validation (§10.1).
	ErrInvalidKeyPackage = errors.New("mls: invalid key package")
	// ErrInvalidTree: a ratchet tree that fails validation (§7.9, §12.4.3.1).
	ErrInvalidTree = errors.New("mls: invalid ratchet tree")
	// ErrInvalidProposal: a proposal or proposal list that is not valid
	// for this group (§12.1, §12.2).
	ErrInvalidProposal = errors.New("mls: invalid proposal")
	// ErrInvalidCommit: a Commit that is not valid for this group (§12.4).
	ErrInvalidCommit = errors.New("mls: invalid commit")
	// ErrUnknownProposal: a Commit refers to a proposal this client has not
	// seen in the current epoch (or has dropped).
	ErrUnknownProposal = errors.New("mls: commit references an unknown proposal")
	// ErrUnknownPSK: a PSK the caller did not provide.
	ErrUnknownPSK = errors.New("mls: pre-shared key not available")
	// ErrNotForUs: a Welcome that names none of our KeyPackages.
	ErrNotForUs = errors.New("mls: welcome is not addressed to this key package")
	// ErrKeyPackageUsed: a single-use KeyPackageBundle that already joined
	// a group.
	ErrKeyPackageUsed = errors.New("mls: key package already used")
	// ErrNotSuccessor: a Welcome of a re-initialized or branched group
	// that does not match the group it claims to succeed.
	ErrNotSuccessor = errors.New("mls: welcome does not match the group it succeeds")
	// ErrUnsupported: a version, cipher suite, credential or extension this
	// client does not support.
	ErrUnsupported = errors.New("mls: unsupported")
	// ErrOwnMessage: a message this member sent came back. Its effect is
	// already applied (proposals are cached when sent) or comes from
	// MergePendingCommit (commits); application data is not shown twice.
	ErrOwnMessage = errors.New("mls: own message received")
	// ErrOwnCommit: a Commit this member sent came back; it takes effect
	// through MergePendingCommit, not by processing. It matches
	// ErrOwnMessage too.
	ErrOwnCommit = fmt.Errorf("%w: commit", ErrOwnMessage)
	// ErrPendingProposals: application data may not be sent while proposals
	// of this epoch wait for a Commit (RFC 9420 §12.4).
	ErrPendingProposals = errors.New("mls: proposals are pending; commit them before sending application data")
	// ErrCommitPending: a Commit of this member awaits MergePendingCommit or
	// DiscardPendingCommit; it must be settled before another is made.
	ErrCommitPending = errors.New("mls: a commit is pending; merge or discard it first")
	// ErrNoPendingCommit: MergePendingCommit without a pending commit (none
	// was made, or it was discarded because another Commit won its epoch).
	ErrNoPendingCommit = errors.New("mls: no pending commit")
)
