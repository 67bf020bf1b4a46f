package mls

import "errors"

// Errors callers can branch on. Functions wrap them with detail; match with
// errors.Is. None of them carries key material.
var (
	// ErrMalformed: bytes that do not decode as the expected structure, or a
	// structure that breaks a syntactic rule of RFC 9420.
	ErrMalformed = errors.New("mls: malformed message")
	// ErrWrongGroup: a message for another group.
	ErrWrongGroup = errors.New("mls: message for another group")
	// ErrWrongEpoch: a message for another epoch of this group.
	ErrWrongEpoch = errors.New("mls: message for another epoch")
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
	// seen in the current epoch.
	ErrUnknownProposal = errors.New("mls: commit references an unknown proposal")
	// ErrUnknownPSK: a PSK the caller did not provide.
	ErrUnknownPSK = errors.New("mls: pre-shared key not available")
	// ErrNotForUs: a Welcome that names none of our KeyPackages.
	ErrNotForUs = errors.New("mls: welcome is not addressed to this key package")
	// ErrUnsupported: a version, cipher suite, credential or extension this
	// client does not support.
	ErrUnsupported = errors.New("mls: unsupported")
	// ErrOwnCommit: a Commit this member sent came back; it takes effect
	// through MergePendingCommit, not by processing.
	ErrOwnCommit = errors.New("mls: own commit received")
	// ErrPendingProposals: application data may not be sent while proposals
	// of this epoch wait for a Commit (RFC 9420 §12.4).
	ErrPendingProposals = errors.New("mls: proposals are pending; commit them before sending application data")
)
