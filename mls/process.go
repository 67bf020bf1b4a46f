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
	Epoch             uint64 // the epoch the message was sent in
	AuthenticatedData []byte

	// ApplicationData is the plaintext of an application message.
	ApplicationData []byte
	// Proposal is a proposal, now cached for a later Commit; ProposalRef
	// is its reference.
	Proposal    Proposal
	ProposalRef []byte
	// Commit describes a Commit that moved the group to a new epoch.
	Commit *CommitResult
	// SignatureKey is the key the message's signature verified with: the
	// sender's leaf signature key in the epoch it was sent (which, for a
	// late message of a past epoch, the leaf may no longer have).
	SignatureKey []byte
}

// CommitResult describes the effect of a Commit: one received by Process
// or this member's own, by MergePendingCommit.
type CommitResult struct {
	Epoch uint64 // the new epoch
	// Committer sent the Commit: a member, or an external joiner
	// (SenderTypeNewMemberCommit) whose new leaf is the last of Added.
	Committer Sender
	// Proposals lists every proposal the Commit applied, in its order,
	// with the reference of those committed by reference.
	Proposals []ProposalEntry
	Added     []LeafIndex // leaves of members added
	Removed   []Member    // members removed, as they were before
	// RemovedSelf is set when the Commit removed this member: the group
	// has not advanced and can no longer be used except to decrypt
	// application messages of the epochs it was in.
	RemovedSelf bool
	// ReInit is set when the Commit applied a ReInit proposal.
	ReInit *ReInitProposal
	// Skipped lists the cached proposals this member's own Commit left
	// out as invalid (RFC 9420 §12.2).
	Skipped []SkippedProposal
	// PendingDiscarded is set when this member had a Commit pending for
	// the same epoch: it lost to this one and was discarded.
	PendingDiscarded bool
	// Retry lists this member's proposals that the new epoch did not
	// apply and that are void now: its cached proposals the Commit did
	// not include (Updates aside: ProposeUpdate makes a fresh one) and,
	// when PendingDiscarded, the by-value proposals of its lost Commit.
	// Propose or commit them again if they are still wanted.
	Retry []Proposal
}

// Process handles an incoming PublicMessage or PrivateMessage of this
// group: application data is decrypted and returned, proposals are cached
// for the Commit that will name them, and a Commit moves the group to its
// next epoch. Application messages of the past epochs the group keeps
// (Config.PastEpochs) are decrypted too.
//
// On any error the group is unchanged, the ratchets of PrivateMessages
// included: a message's key is spent, and the keys of generations it
// skipped are kept, only once the message is authenticated and accepted.
// The errors a caller branches on are listed in errors.go: ErrFutureEpoch
// (keep the message for later), ErrStaleCommit, ErrReplay, ErrOwnMessage,
// …
//
// After a successful Process (and Encrypt, Propose, Commit) the group's
// persisted state is out of date: save it again before acknowledging the
// message.
func (g *Group) Process(m *MLSMessage) (*Received, error) {
	if g.joining {
		return nil, fmt.Errorf("%w: external join not merged yet", ErrWrongEpoch)
	}
	switch m.WireFormat {
	case WireFormatPublicMessage:
		if m.PublicMessage == nil {
			return nil, fmt.Errorf("%w: no PublicMessage", ErrMalformed)
		}
		return g.processPublic(m.PublicMessage)
	case WireFormatPrivateMessage:
		if m.PrivateMessage == nil {
			return nil, fmt.Errorf("%w: no PrivateMessage", ErrMalformed)
		}
		return g.processPrivate(m.PrivateMessage)
	}
	return nil, fmt.Errorf("%w: wire format %d is not a group message", ErrMalformed, m.WireFormat)
}

// ownMessage is the error for a message this member sent.
func ownMessage(ct ContentType) error {
	if ct == ContentTypeCommit {
		return ErrOwnCommit
	}
	return ErrOwnMessage
}

// checkEpoch classifies a message's epoch against the group's: nil for
// the current epoch (of a group that may process it), a sentinel error
// otherwise. Past-epoch application messages return nil and are handled
// by the caller. tag is a Commit's confirmation tag, when visible.
func (g *Group) checkEpoch(groupID []byte, epoch uint64, ct ContentType, tag []byte) error {
	if !bytes.Equal(groupID, g.ctx.GroupID) {
		return ErrWrongGroup
	}
	cur := g.ctx.Epoch
	switch {
	case epoch > cur:
		if g.removed {
			return fmt.Errorf("%w: message for epoch %d", ErrRemoved, epoch)
		}
		return fmt.Errorf("%w: message for epoch %d, group is at %d", ErrFutureEpoch, epoch, cur)
	case epoch < cur:
		switch ct {
		case ContentTypeCommit:
			if tag != nil && equalSecret(tag, g.endTag(epoch)) {
				return fmt.Errorf("%w: the commit that ended epoch %d", ErrReplay, epoch)
			}
			return fmt.Errorf("%w: commit for epoch %d, group is at %d", ErrStaleCommit, epoch, cur)
		case ContentTypeProposal:
			return fmt.Errorf("%w: proposal for epoch %d, group is at %d", ErrStaleProposal, epoch, cur)
		}
		return nil
	}
	if ct != ContentTypeApplication {
		if err := g.usable(); err != nil {
			return err
		}
	}
	return nil
}

// endTag returns the confirmation tag of the Commit that ended a past
// epoch, if it is known.
func (g *Group) endTag(epoch uint64) []byte {
	if epoch+1 == g.ctx.Epoch {
		return g.confirmationTag
	}
	if p := g.pastEpoch(epoch); p != nil {
		return p.endTag
	}
	return nil
}

func (g *Group) pastEpoch(epoch uint64) *pastEpoch {
	for _, p := range g.past {
		if p.epoch == epoch {
			return p
		}
	}
	return nil
}

func (g *Group) processPublic(pm *PublicMessage) (*Received, error) {
	c := &pm.Content
	if !bytes.Equal(c.GroupID, g.ctx.GroupID) {
		return nil, ErrWrongGroup
	}
	if c.Sender.Type == SenderTypeMember && LeafIndex(c.Sender.Index) == g.priv.leaf {
		return nil, ownMessage(c.ContentType)
	}
	if c.ContentType == ContentTypeApplication {
		return nil, fmt.Errorf("%w: application data in a PublicMessage", ErrMalformed)
	}
	if err := g.checkEpoch(c.GroupID, c.Epoch, c.ContentType, pm.Auth.ConfirmationTag); err != nil {
		return nil, err
	}
	key, err := g.senderKey(c, WireFormatPublicMessage)
	if err != nil {
		return nil, err
	}
	ac, err := fromPublic(g.suite, pm, g.secrets.membership, g.ctxBytes)
	if err != nil {
		return nil, err
	}
	if err := g.verifySender(key, ac, g.ctxBytes); err != nil {
		return nil, err
	}
	return g.applyFrom(ac, key, nil)
}

// applyFrom is apply for content whose signature verified with key; the
// result names that key, so a late message of a past epoch is credited to
// whoever actually signed it.
func (g *Group) applyFrom(ac *AuthenticatedContent, key []byte, accept func()) (*Received, error) {
	r, err := g.apply(ac, accept)
	if err != nil {
		return nil, err
	}
	r.SignatureKey = clone(key)
	return r, nil
}

// epochKeys is what decrypting and authenticating a PrivateMessage of one
// epoch takes: the current epoch's or a kept past one's.
type epochKeys struct {
	senderData []byte
	secretTree *secretTree
	ctxBytes   []byte
	sigKey     func(LeafIndex) []byte // nil for a leaf that is not a member
}

func (g *Group) currentKeys() epochKeys {
	return epochKeys{
		senderData: g.secrets.senderData, secretTree: g.secretTree, ctxBytes: g.ctxBytes,
		sigKey: func(l LeafIndex) []byte {
			if n := g.tree.leaf(l); n != nil {
				return n.SignatureKey
			}
			return nil
		},
	}
}

func (p *pastEpoch) keys() epochKeys {
	return epochKeys{
		senderData: p.senderData, secretTree: p.secretTree, ctxBytes: p.ctxBytes,
		sigKey: func(l LeafIndex) []byte {
			if int(l) < len(p.sigKeys) {
				return p.sigKeys[l]
			}
			return nil
		},
	}
}

func (g *Group) processPrivate(pm *PrivateMessage) (*Received, error) {
	if err := g.checkEpoch(pm.GroupID, pm.Epoch, pm.ContentType, nil); err != nil {
		if errors.Is(err, ErrStaleCommit) {
			return nil, g.classifyPastCommit(pm, err)
		}
		return nil, err
	}
	k := g.currentKeys()
	if pm.Epoch != g.ctx.Epoch {
		p := g.pastEpoch(pm.Epoch)
		if p == nil {
			return nil, fmt.Errorf("%w: message for epoch %d, group is at %d", ErrEpochExpired, pm.Epoch, g.ctx.Epoch)
		}
		k = p.keys()
	}
	sd, err := openSenderData(g.suite, k.senderData, pm)
	if err != nil {
		return nil, err
	}
	if sd.leaf == g.priv.leaf {
		return nil, ownMessage(pm.ContentType)
	}
	key := k.sigKey(sd.leaf)
	if key == nil {
		return nil, fmt.Errorf("%w: sender data names leaf %d", ErrNotMember, sd.leaf)
	}
	dec, err := openContent(g.suite, k.secretTree, sd, pm)
	if err != nil {
		return nil, err
	}
	if err := g.verifySender(key, dec.content, k.ctxBytes); err != nil {
		dec.discard()
		return nil, err
	}
	if pm.Epoch != g.ctx.Epoch {
		// A late application message of a kept past epoch.
		dec.consume(k.secretTree)
		r := g.received(dec.content)
		r.SignatureKey = clone(key)
		return r, nil
	}
	// The key is spent only once the content is accepted: a forgery by
	// another member who can derive the same key cannot burn it, and an
	// invalid proposal or commit leaves the group unchanged, its ratchet
	// included.
	r, err := g.applyFrom(dec.content, key, func() { dec.consume(k.secretTree) })
	if err != nil {
		dec.discard()
		return nil, err
	}
	return r, nil
}

// classifyPastCommit tells a replayed PrivateMessage Commit of a past
// epoch (one this member sent or already processed: its key is spent)
// from a competing one, without changing state. stale is returned when
// it cannot tell.
func (g *Group) classifyPastCommit(pm *PrivateMessage, stale error) error {
	p := g.pastEpoch(pm.Epoch)
	if p == nil {
		return stale
	}
	sd, err := openSenderData(g.suite, p.senderData, pm)
	if err != nil {
		return stale
	}
	if sd.leaf == g.priv.leaf {
		return ErrOwnCommit
	}
	if p.secretTree.used(sd.leaf, handshakeRatchet, sd.generation) {
		return fmt.Errorf("%w: commit of epoch %d", ErrReplay, pm.Epoch)
	}
	return stale
}

// apply acts on authenticated content of the current epoch. accept, when
// set, is called once the content is found valid, before the group
// changes.
func (g *Group) apply(ac *AuthenticatedContent, accept func()) (*Received, error) {
	if accept == nil {
		accept = func() {}
	}
	c := &ac.Content
	r := g.received(ac)
	switch c.ContentType {
	case ContentTypeApplication:
		accept()
	case ContentTypeProposal:
		ref := cipher.MakeProposalRef(g.suite, codec.Marshal(ac))
		if g.cachedProposal(ref) != nil {
			return nil, fmt.Errorf("%w: proposal already cached", ErrReplay)
		}
		if len(g.proposals) >= MaxProposals {
			return nil, fmt.Errorf("%w: too many proposals in one epoch", ErrInvalidProposal)
		}
		accept()
		_ = g.cacheProposal(ref, ac)
		r.Proposal, r.ProposalRef = c.Proposal, ref
	case ContentTypeCommit:
		next, res, err := g.processCommit(ac)
		if err != nil {
			return nil, err
		}
		accept()
		res.Retry = g.ownUnapplied(res.Proposals)
		if g.pending != nil {
			res.PendingDiscarded = true
			res.Retry = append(res.Retry, g.discardPending()...)
		}
		if next != nil {
			g.advance(next)
			g.reinit = res.ReInit
		} else {
			g.removed = true
		}
		r.Commit = res
	}
	return r, nil
}

// received is the part of Received every content type has, and the
// application data.
func (g *Group) received(ac *AuthenticatedContent) *Received {
	c := &ac.Content
	return &Received{
		Sender: c.Sender, ContentType: c.ContentType, Epoch: c.Epoch, AuthenticatedData: c.AuthenticatedData,
		ApplicationData: c.ApplicationData,
	}
}

// senderKey returns the signature key that must have signed content c
// arriving in wire format wf, after checking that its sender may send it
// (RFC 9420 §6.1).
func (g *Group) senderKey(c *FramedContent, wf WireFormat) ([]byte, error) {
	switch c.Sender.Type {
	case SenderTypeMember:
		n := g.tree.leaf(LeafIndex(c.Sender.Index))
		if n == nil {
			return nil, fmt.Errorf("%w: sender leaf %d", ErrNotMember, c.Sender.Index)
		}
		return n.SignatureKey, nil
	case SenderTypeExternal:
		if wf != WireFormatPublicMessage || c.ContentType != ContentTypeProposal {
			return nil, fmt.Errorf("%w: external sender sent content type %d", ErrMalformed, c.ContentType)
		}
		switch c.Proposal.ProposalType() {
		case ProposalTypeAdd, ProposalTypeRemove, ProposalTypePSK, ProposalTypeReInit, ProposalTypeGroupContextExtensions:
		default:
			return nil, fmt.Errorf("%w: external sender sent proposal type %d", ErrMalformed, c.Proposal.ProposalType())
		}
		data, ok := g.ctx.Extensions.Find(ExtensionTypeExternalSenders)
		if !ok {
			return nil, fmt.Errorf("%w: external sender but no external_senders extension", ErrNotMember)
		}
		var senders ExternalSenders
		if err := decode(data, &senders, "external_senders"); err != nil {
			return nil, err
		}
		if int(c.Sender.Index) >= len(senders) {
			return nil, fmt.Errorf("%w: external sender %d not in external_senders", ErrNotMember, c.Sender.Index)
		}
		return senders[c.Sender.Index].SignatureKey, nil
	case SenderTypeNewMemberProposal:
		add, ok := c.Proposal.(*AddProposal)
		if wf != WireFormatPublicMessage || c.ContentType != ContentTypeProposal || !ok {
			return nil, fmt.Errorf("%w: new member proposal that is not an Add", ErrMalformed)
		}
		return add.KeyPackage.LeafNode.SignatureKey, nil
	case SenderTypeNewMemberCommit:
		if wf != WireFormatPublicMessage || c.ContentType != ContentTypeCommit || c.Commit.Path == nil {
			return nil, fmt.Errorf("%w: new member commit without a path", ErrMalformed)
		}
		return c.Commit.Path.LeafNode.SignatureKey, nil
	}
	return nil, fmt.Errorf("%w: sender type %d", ErrMalformed, c.Sender.Type)
}

// cacheProposal stores a proposal of the current epoch under its reference.
func (g *Group) cacheProposal(ref []byte, ac *AuthenticatedContent) error {
	if len(g.proposals) >= MaxProposals {
		return fmt.Errorf("%w: too many proposals in one epoch", ErrInvalidProposal)
	}
	g.proposals = append(g.proposals, ProposalEntry{Ref: ref, Proposal: ac.Content.Proposal, Sender: ac.Content.Sender})
	return nil
}

// ownUnapplied returns this member's cached proposals, Updates aside, that
// a Commit applying committed did not include.
func (g *Group) ownUnapplied(committed []ProposalEntry) []Proposal {
	me := Sender{Type: SenderTypeMember, Index: uint32(g.priv.leaf)}
	var out []Proposal
	for _, cp := range g.proposals {
		if cp.Sender != me || cp.Proposal.ProposalType() == ProposalTypeUpdate {
			continue
		}
		found := false
		for _, c := range committed {
			if bytes.Equal(c.Ref, cp.Ref) {
				found = true
				break
			}
		}
		if !found {
			out = append(out, cp.Proposal)
		}
	}
	return out
}

// advance makes next the current epoch. Of the epoch left, only what
// decrypts late PrivateMessages is kept (Config.PastEpochs); the rest of
// its secrets is deleted.
func (g *Group) advance(next *epochState) {
	// A group that joins by external Commit had no keys in the epoch it
	// leaves: nothing to keep.
	if n := g.cfg.pastEpochs(); n > 0 && !g.joining {
		g.past = append(g.past, &pastEpoch{
			epoch: g.ctx.Epoch, ctxBytes: g.ctxBytes, sigKeys: g.tree.signatureKeys(),
			senderData: g.secrets.senderData, secretTree: g.secretTree, endTag: clone(next.confirmationTag),
		})
		g.secrets.senderData = nil // kept, not wiped below
		if over := len(g.past) - n; over > 0 {
			for _, p := range g.past[:over] {
				p.wipe()
			}
			g.past = append([]*pastEpoch(nil), g.past[over:]...)
		}
	} else {
		g.secretTree.wipeAll()
	}
	g.secrets.wipe()
	g.epochState = *next
	g.proposals = nil
	for _, k := range g.pendingUpdates {
		wipe(k.priv)
	}
	g.pendingUpdates = nil
	g.rememberResumption()
}
