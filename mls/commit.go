package mls

import (
	"bytes"
	"fmt"

	"github.com/quicproquo/qpq/mls/codec"
)

// resolvedProposal is a proposal of a Commit with its original sender.
type resolvedProposal struct {
	proposal Proposal
	sender   Sender
}

// appliedProposals is the outcome of applying a proposal list to a copy
// of the tree and the group context extensions (RFC 9420 §12.3).
type appliedProposals struct {
	tree         *ratchetTree
	extensions   Extensions
	added        []LeafIndex
	addedKPs     []*KeyPackage
	removed      []LeafIndex
	psks         []PreSharedKeyID
	externalInit *ExternalInitProposal
	reinit       *ReInitProposal
	pathRequired bool
}

// resolveProposals turns a Commit's ProposalOrRefs into proposals, looking
// references up in the proposals cached this epoch.
func (g *Group) resolveProposals(c *Commit, committer Sender) ([]resolvedProposal, error) {
	out := make([]resolvedProposal, 0, len(c.Proposals))
	for _, por := range c.Proposals {
		if por.Proposal != nil {
			out = append(out, resolvedProposal{proposal: por.Proposal, sender: committer})
			continue
		}
		if committer.Type == SenderTypeNewMemberCommit {
			return nil, fmt.Errorf("%w: external commit refers to a proposal", ErrInvalidCommit)
		}
		found := false
		for _, cp := range g.proposals {
			if bytes.Equal(cp.ref, por.Reference) {
				out = append(out, resolvedProposal{proposal: cp.proposal, sender: cp.sender})
				found = true
				break
			}
		}
		if !found {
			return nil, ErrUnknownProposal
		}
	}
	return out, nil
}

// applyProposals validates a proposal list for a Commit by committer
// (RFC 9420 §12.2) and applies it to a copy of the tree (§12.3).
func (g *Group) applyProposals(list []resolvedProposal, committer Sender) (*appliedProposals, error) {
	external := committer.Type == SenderTypeNewMemberCommit
	a := &appliedProposals{tree: g.tree.clone(), extensions: g.ctx.Extensions, pathRequired: len(list) == 0}
	var updates, removes, adds []resolvedProposal
	var gce *GroupContextExtensionsProposal
	touched := map[LeafIndex]bool{} // leaves with an Update or Remove
	var pskIDs [][]byte
	counts := map[ProposalType]int{}
	for _, rp := range list {
		t := rp.proposal.ProposalType()
		counts[t]++
		switch t {
		case ProposalTypeUpdate, ProposalTypeRemove, ProposalTypeExternalInit, ProposalTypeGroupContextExtensions:
			a.pathRequired = true
		}
		switch p := rp.proposal.(type) {
		case *AddProposal:
			adds = append(adds, rp)
		case *UpdateProposal:
			if rp.sender.Type != SenderTypeMember {
				return nil, fmt.Errorf("%w: update from a non-member", ErrInvalidProposal)
			}
			if committer.Type == SenderTypeMember && rp.sender.Index == committer.Index {
				return nil, fmt.Errorf("%w: committer's own update", ErrInvalidProposal)
			}
			l := LeafIndex(rp.sender.Index)
			if touched[l] {
				return nil, fmt.Errorf("%w: two updates or removes for leaf %d", ErrInvalidProposal, l)
			}
			touched[l] = true
			updates = append(updates, rp)
		case *RemoveProposal:
			if committer.Type == SenderTypeMember && uint32(p.Removed) == committer.Index {
				return nil, fmt.Errorf("%w: committer removes itself", ErrInvalidProposal)
			}
			if touched[p.Removed] {
				return nil, fmt.Errorf("%w: two updates or removes for leaf %d", ErrInvalidProposal, p.Removed)
			}
			touched[p.Removed] = true
			removes = append(removes, rp)
		case *PreSharedKeyProposal:
			id := &p.PSK
			if id.Type == PSKTypeResumption && id.Usage != ResumptionPSKUsageApplication {
				return nil, fmt.Errorf("%w: resumption PSK with usage %d in a proposal", ErrInvalidProposal, id.Usage)
			}
			if len(id.PSKNonce) != g.suite.Nh() {
				return nil, fmt.Errorf("%w: PSK nonce of %d bytes", ErrInvalidProposal, len(id.PSKNonce))
			}
			enc := codec.Marshal(id)
			for _, prev := range pskIDs {
				if bytes.Equal(prev, enc) {
					return nil, fmt.Errorf("%w: the same PSK twice", ErrInvalidProposal)
				}
			}
			pskIDs = append(pskIDs, enc)
			a.psks = append(a.psks, *id)
		case *ReInitProposal:
			if p.Version < g.ctx.Version {
				return nil, fmt.Errorf("%w: reinit to an older version", ErrInvalidProposal)
			}
			a.reinit = p
		case *ExternalInitProposal:
			a.externalInit = p
		case *GroupContextExtensionsProposal:
			gce = p
		}
	}
	if external {
		if counts[ProposalTypeExternalInit] != 1 || counts[ProposalTypeRemove] > 1 ||
			len(list) != counts[ProposalTypeExternalInit]+counts[ProposalTypeRemove]+counts[ProposalTypePSK] {
			return nil, fmt.Errorf("%w: external commit may hold one ExternalInit, at most one Remove and PSKs only", ErrInvalidProposal)
		}
	} else if counts[ProposalTypeExternalInit] > 0 {
		return nil, fmt.Errorf("%w: ExternalInit in a member's commit", ErrInvalidProposal)
	}
	if counts[ProposalTypeGroupContextExtensions] > 1 {
		return nil, fmt.Errorf("%w: more than one GroupContextExtensions", ErrInvalidProposal)
	}
	if a.reinit != nil && len(list) != 1 {
		return nil, fmt.Errorf("%w: ReInit with other proposals", ErrInvalidProposal)
	}

	t := a.tree
	if gce != nil {
		a.extensions = gce.Extensions
	}
	for _, rp := range updates {
		l := LeafIndex(rp.sender.Index)
		old := t.leaf(l)
		if old == nil {
			return nil, fmt.Errorf("%w: update from blank leaf %d", ErrInvalidProposal, l)
		}
		n := &rp.proposal.(*UpdateProposal).LeafNode
		if bytes.Equal(n.EncryptionKey, old.EncryptionKey) {
			return nil, fmt.Errorf("%w: update keeps the encryption key", ErrInvalidProposal)
		}
		if err := validateLeafNode(g.leafCheck(t, a.extensions, LeafNodeSourceUpdate, l, int64(l)), n); err != nil {
			return nil, fmt.Errorf("%w: update from leaf %d: %w", ErrInvalidProposal, l, err)
		}
		t.setLeaf(l, n)
		t.blankPath(l)
	}
	for _, rp := range removes {
		l := rp.proposal.(*RemoveProposal).Removed
		if t.leaf(l) == nil {
			return nil, fmt.Errorf("%w: remove of blank leaf %d", ErrInvalidProposal, l)
		}
		t.removeLeaf(l)
		a.removed = append(a.removed, l)
	}
	for _, rp := range adds {
		kp := &rp.proposal.(*AddProposal).KeyPackage
		c := g.leafCheck(t, a.extensions, LeafNodeSourceKeyPackage, 0, -1)
		if err := validateKeyPackage(c, kp, g.ctx.Version); err != nil {
			return nil, fmt.Errorf("%w: add: %w", ErrInvalidProposal, err)
		}
		leaf := kp.LeafNode
		a.added = append(a.added, t.addLeaf(&leaf))
		a.addedKPs = append(a.addedKPs, kp)
	}
	if gce != nil {
		var err error
		t.members(func(l LeafIndex, n *LeafNode) {
			if err == nil {
				if e := checkSupports(&n.Capabilities, gce.Extensions); e != nil {
					err = fmt.Errorf("%w: leaf %d: %w", ErrInvalidProposal, l, e)
				}
			}
		})
		if err != nil {
			return nil, err
		}
	}
	return a, nil
}

// processCommit verifies a Commit from another member or an external
// joiner and computes the epoch it leads to (RFC 9420 §12.4.2). It returns
// a nil state when the Commit removes this member.
func (g *Group) processCommit(ac *AuthenticatedContent) (*epochState, *CommitResult, error) {
	s := g.suite
	c := ac.Content.Commit
	committer := ac.Content.Sender
	list, err := g.resolveProposals(c, committer)
	if err != nil {
		return nil, nil, err
	}
	a, err := g.applyProposals(list, committer)
	if err != nil {
		return nil, nil, err
	}
	res := &CommitResult{Epoch: g.ctx.Epoch + 1, Added: a.added, Removed: a.removed, ReInit: a.reinit}
	if a.pathRequired && c.Path == nil {
		return nil, nil, fmt.Errorf("%w: path required", ErrInvalidCommit)
	}
	for _, l := range a.removed {
		if l == g.priv.leaf {
			res.RemovedSelf = true
			return nil, res, nil
		}
	}

	t := a.tree
	next := &epochState{tree: t, priv: g.priv.clone()}
	if mine := t.leaf(g.priv.leaf); mine != nil {
		// An Update of ours that the Commit applied: take its key.
		for _, k := range g.pendingUpdates {
			if bytes.Equal(k.pub, mine.EncryptionKey) {
				next.priv.keys[g.priv.leaf.Node()] = nodeKey{priv: clone(k.priv), pub: clone(k.pub)}
			}
		}
	}
	ctx := GroupContext{
		Version: g.ctx.Version, CipherSuite: g.ctx.CipherSuite, GroupID: g.ctx.GroupID,
		Epoch: g.ctx.Epoch + 1, ConfirmedTranscriptHash: g.ctx.ConfirmedTranscriptHash, Extensions: a.extensions,
	}
	commitSecret := make([]byte, s.Nh())
	if c.Path != nil {
		sender := LeafIndex(committer.Index)
		replaces := int64(sender)
		if committer.Type == SenderTypeNewMemberCommit {
			sender = t.addLeaf(&c.Path.LeafNode)
			replaces = int64(sender)
		} else if old := t.leaf(sender); old == nil {
			return nil, nil, fmt.Errorf("%w: committer leaf %d is blank", ErrInvalidCommit, sender)
		} else if bytes.Equal(old.EncryptionKey, c.Path.LeafNode.EncryptionKey) {
			return nil, nil, fmt.Errorf("%w: committer keeps its encryption key", ErrInvalidCommit)
		}
		check := g.leafCheck(t, a.extensions, LeafNodeSourceCommit, sender, replaces)
		if err := validateLeafNode(check, &c.Path.LeafNode); err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrInvalidCommit, err)
		}
		if err := t.mergePath(sender, c.Path); err != nil {
			return nil, nil, err
		}
		next.priv.prune(t)
		ctx.TreeHash = t.rootHash()
		provisional := codec.Marshal(&ctx)
		commitSecret, _, err = t.decryptPath(next.priv, sender, c.Path, provisional, a.added)
		if err != nil {
			return nil, nil, err
		}
		if committer.Type == SenderTypeNewMemberCommit {
			res.Added = append(res.Added, sender)
		}
	} else {
		if committer.Type == SenderTypeNewMemberCommit {
			return nil, nil, fmt.Errorf("%w: external commit without a path", ErrInvalidCommit)
		}
		next.priv.prune(t)
		ctx.TreeHash = t.rootHash()
	}
	defer wipe(commitSecret)

	initSecret := g.secrets.init
	if a.externalInit != nil {
		extPriv, _, err := externalKeyPair(s, g.secrets.external)
		if err != nil {
			return nil, nil, err
		}
		initSecret, err = s.HPKEExportReceiver(extPriv, a.externalInit.KEMOutput, nil, []byte(externalInitLabel), s.Nh())
		wipe(extPriv)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: external init: %v", ErrDecrypt, err)
		}
		defer wipe(initSecret)
	}
	psks, err := g.resolvePSKs(a.psks)
	if err != nil {
		return nil, nil, err
	}
	psk := pskSecret(s, psks)
	defer wipe(psk)

	ctx.ConfirmedTranscriptHash = confirmedTranscriptHash(s, g.interim, ac)
	next.setContext(ctx)
	joiner := joinerSecret(s, initSecret, commitSecret, next.ctxBytes)
	defer wipe(joiner)
	welcome, secrets := welcomeAndEpoch(s, joiner, psk, next.ctxBytes)
	wipe(welcome)
	if !equalSecret(confirmationTag(s, secrets.confirmation, ctx.ConfirmedTranscriptHash), ac.Auth.ConfirmationTag) {
		secrets.wipe()
		return nil, nil, ErrBadConfirmationTag
	}
	next.secrets = secrets
	next.secretTree = newSecretTree(s, g.cfg.Ratchet, secrets.encryption, t.numLeaves())
	next.confirmationTag = clone(ac.Auth.ConfirmationTag)
	next.interim = interimTranscriptHash(s, ctx.ConfirmedTranscriptHash, ac.Auth.ConfirmationTag)
	return next, res, nil
}

// externalInitLabel is the HPKE exporter context of external init.
const externalInitLabel = "MLS 1.0 external init secret"
