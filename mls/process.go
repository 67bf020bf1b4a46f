package mls

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/quicproquo/qpq/mls/cipher"
	"github.com/quicproquo/qpq/mls/codec"
)

// Received is what Process found in a message.
type Received struct {
	Sender            Sender
	ContentType       ContentType
	AuthenticatedData []byte

	// ApplicationData is the plaintext of an application message.
	ApplicationData []byte
	// Proposal is a proposal, now cached for a later Commit; ProposalRef
	// is its reference.
	Proposal    Proposal
	ProposalRef []byte
	// Commit describes a Commit that moved the group to a new epoch.
	Commit *CommitResult
}

// CommitResult describes the effect of a processed Commit.
type CommitResult struct {
	Epoch   uint64      // the new epoch
	Added   []LeafIndex // leaves of members added
	Removed []LeafIndex // leaves of members removed
	// RemovedSelf is set when the Commit removed this member: the group
	// has not advanced and can no longer be used.
	RemovedSelf bool
	// ReInit is set when the Commit applied a ReInit proposal.
	ReInit *ReInitProposal
}

// ErrOwnCommit: a Commit this member sent itself came back; it is applied
// through the pending commit, not by processing.
var ErrOwnCommit = errors.New("mls: own commit received")

// Process handles an incoming PublicMessage or PrivateMessage of this
// group: application data is decrypted and returned, proposals are cached
// for the Commit that will name them, and a Commit moves the group to its
// next epoch. On any error the group is unchanged.
func (g *Group) Process(m *MLSMessage) (*Received, error) {
	if g.reinit != nil {
		return nil, fmt.Errorf("%w: group was re-initialized", ErrWrongEpoch)
	}
	var ac *AuthenticatedContent
	var dec *decrypted
	switch m.WireFormat {
	case WireFormatPublicMessage:
		pm := m.PublicMessage
		if err := g.checkGroupEpoch(pm.Content.GroupID, pm.Content.Epoch); err != nil {
			return nil, err
		}
		var err error
		if ac, err = fromPublic(g.suite, pm, g.secrets.membership, g.ctxBytes); err != nil {
			return nil, err
		}
	case WireFormatPrivateMessage:
		pm := m.PrivateMessage
		if err := g.checkGroupEpoch(pm.GroupID, pm.Epoch); err != nil {
			return nil, err
		}
		var err error
		dec, err = fromPrivate(g.suite, g.secretTree, g.secrets.senderData, pm, func(l LeafIndex) bool { return g.tree.leaf(l) != nil })
		if err != nil {
			return nil, err
		}
		ac = dec.content
	default:
		return nil, fmt.Errorf("%w: wire format %d is not a group message", ErrMalformed, m.WireFormat)
	}

	key, err := g.senderKey(ac)
	if err != nil {
		return nil, err
	}
	if err := verifyContent(g.suite, key, ac, g.ctxBytes); err != nil {
		return nil, err
	}
	if dec != nil {
		// Only now is the key spent: a forgery by another member who can
		// derive the same key cannot burn it.
		dec.consume(g.secretTree)
	}
	r := &Received{Sender: ac.Content.Sender, ContentType: ac.Content.ContentType, AuthenticatedData: ac.Content.AuthenticatedData}
	switch ac.Content.ContentType {
	case ContentTypeApplication:
		r.ApplicationData = ac.Content.ApplicationData
	case ContentTypeProposal:
		ref, err := g.cacheProposal(ac)
		if err != nil {
			return nil, err
		}
		r.Proposal, r.ProposalRef = ac.Content.Proposal, ref
	case ContentTypeCommit:
		if ac.Content.Sender.Type == SenderTypeMember && LeafIndex(ac.Content.Sender.Index) == g.priv.leaf {
			return nil, ErrOwnCommit
		}
		next, res, err := g.processCommit(ac)
		if err != nil {
			return nil, err
		}
		if next != nil {
			g.advance(next)
			g.reinit = res.ReInit
		}
		r.Commit = res
	}
	return r, nil
}

func (g *Group) checkGroupEpoch(groupID []byte, epoch uint64) error {
	if !bytes.Equal(groupID, g.ctx.GroupID) {
		return ErrWrongGroup
	}
	if epoch != g.ctx.Epoch {
		return fmt.Errorf("%w: message for epoch %d, group is at %d", ErrWrongEpoch, epoch, g.ctx.Epoch)
	}
	return nil
}

// senderKey returns the signature key that must have signed ac, after
// checking that its sender may send this content (RFC 9420 §6.1).
func (g *Group) senderKey(ac *AuthenticatedContent) ([]byte, error) {
	c := &ac.Content
	switch c.Sender.Type {
	case SenderTypeMember:
		n := g.tree.leaf(LeafIndex(c.Sender.Index))
		if n == nil {
			return nil, fmt.Errorf("%w: sender leaf %d is not a member", ErrMalformed, c.Sender.Index)
		}
		return n.SignatureKey, nil
	case SenderTypeExternal:
		if ac.WireFormat != WireFormatPublicMessage || c.ContentType != ContentTypeProposal {
			return nil, fmt.Errorf("%w: external sender sent content type %d", ErrMalformed, c.ContentType)
		}
		switch c.Proposal.ProposalType() {
		case ProposalTypeAdd, ProposalTypeRemove, ProposalTypePSK, ProposalTypeReInit, ProposalTypeGroupContextExtensions:
		default:
			return nil, fmt.Errorf("%w: external sender sent proposal type %d", ErrMalformed, c.Proposal.ProposalType())
		}
		data, ok := g.ctx.Extensions.Find(ExtensionTypeExternalSenders)
		if !ok {
			return nil, fmt.Errorf("%w: external sender but no external_senders extension", ErrInvalidProposal)
		}
		var senders ExternalSenders
		if err := decode(data, &senders, "external_senders"); err != nil {
			return nil, err
		}
		if int(c.Sender.Index) >= len(senders) {
			return nil, fmt.Errorf("%w: external sender %d not in external_senders", ErrInvalidProposal, c.Sender.Index)
		}
		return senders[c.Sender.Index].SignatureKey, nil
	case SenderTypeNewMemberProposal:
		add, ok := c.Proposal.(*AddProposal)
		if ac.WireFormat != WireFormatPublicMessage || c.ContentType != ContentTypeProposal || !ok {
			return nil, fmt.Errorf("%w: new member proposal that is not an Add", ErrMalformed)
		}
		return add.KeyPackage.LeafNode.SignatureKey, nil
	case SenderTypeNewMemberCommit:
		if ac.WireFormat != WireFormatPublicMessage || c.ContentType != ContentTypeCommit || c.Commit.Path == nil {
			return nil, fmt.Errorf("%w: new member commit without a path", ErrMalformed)
		}
		return c.Commit.Path.LeafNode.SignatureKey, nil
	}
	return nil, fmt.Errorf("%w: sender type %d", ErrMalformed, c.Sender.Type)
}

// cacheProposal stores a received proposal under its reference.
func (g *Group) cacheProposal(ac *AuthenticatedContent) ([]byte, error) {
	ref := cipher.MakeProposalRef(g.suite, codec.Marshal(ac))
	for _, p := range g.proposals {
		if bytes.Equal(p.ref, ref) {
			return ref, nil
		}
	}
	if len(g.proposals) >= MaxProposals {
		return nil, fmt.Errorf("%w: too many proposals in one epoch", ErrInvalidProposal)
	}
	g.proposals = append(g.proposals, cachedProposal{ref: ref, proposal: ac.Content.Proposal, sender: ac.Content.Sender})
	return ref, nil
}

// advance makes next the current epoch and forgets the old one.
func (g *Group) advance(next *epochState) {
	g.secrets.wipe()
	g.secretTree.wipeAll()
	g.epochState = *next
	g.proposals = nil
	for _, k := range g.pendingUpdates {
		wipe(k.priv)
	}
	g.pendingUpdates = nil
	g.rememberResumption()
}
