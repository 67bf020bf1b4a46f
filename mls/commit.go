package mls

import (
	"bytes"
	"fmt"

	"github.com/quicproquo/qpq/mls/codec"
)

// resolvedProposal is a proposal of a Commit with its original sender.
// optional marks a cached proposal a committer includes only if it is
// valid; anything else in the list must be.
type resolvedProposal struct {
	proposal Proposal
	sender   Sender
	ref      []byte // nil when by value
	optional bool
	// successor allows the reinit or branch PSK of the first Commit of a
	// group that succeeds another (RFC 9420 §11.2, §11.3).
	successor bool
}

// ProposalEntry is a proposal with its sender and reference: a proposal
// cached for a Commit, or one a Commit applied (Ref is nil for a proposal
// the Commit carried by value).
type ProposalEntry struct {
	Ref      []byte
	Sender   Sender
	Proposal Proposal
}

func (p ProposalEntry) clone() ProposalEntry {
	p.Ref = clone(p.Ref)
	return p
}

// SkippedProposal is a cached proposal a Commit left out because it was
// not valid, alone or together with the rest of the list (RFC 9420 §12.2).
type SkippedProposal struct {
	ProposalEntry
	Reason error
}

// appliedProposals is the outcome of applying a proposal list to a copy
// of the tree and the group context extensions (RFC 9420 §12.3).
type appliedProposals struct {
	list         []resolvedProposal // the valid ones, in list order
	skipped      []SkippedProposal
	tree         *ratchetTree
	extensions   Extensions
	added        []LeafIndex
	addedKPs     []*KeyPackage
	removed      []Member
	psks         []PreSharedKeyID
	externalInit *ExternalInitProposal
	reinit       *ReInitProposal
	pathRequired bool
	// externalRemove is the leaf an external joiner replaces, when
	// hasExternalRemove.
	externalRemove    LeafIndex
	hasExternalRemove bool
}

func (a *appliedProposals) committed() []ProposalEntry {
	out := make([]ProposalEntry, len(a.list))
	for i, rp := range a.list {
		out[i] = rp.entry()
	}
	return out
}

func (rp *resolvedProposal) entry() ProposalEntry {
	return ProposalEntry{Ref: clone(rp.ref), Sender: rp.sender, Proposal: rp.proposal}
}

func (a *appliedProposals) removedLeaves() []LeafIndex {
	out := make([]LeafIndex, len(a.removed))
	for i, m := range a.removed {
		out[i] = m.Leaf
	}
	return out
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
		cp := g.cachedProposal(por.Reference)
		if cp == nil {
			return nil, ErrUnknownProposal
		}
		out = append(out, resolvedProposal{proposal: cp.Proposal, sender: cp.Sender, ref: cp.Ref})
	}
	return out, nil
}

func (g *Group) cachedProposal(ref []byte) *ProposalEntry {
	for i := range g.proposals {
		if bytes.Equal(g.proposals[i].Ref, ref) {
			return &g.proposals[i]
		}
	}
	return nil
}

// proposalFilter applies the validity rules of a proposal list. A rule
// broken by an optional proposal drops that proposal; broken by any other,
// it fails the list.
type proposalFilter struct {
	list    []resolvedProposal
	dropped []bool
	skipped []SkippedProposal
}

// drop leaves proposal i out for reason err, or returns err when i is not
// optional.
func (f *proposalFilter) drop(i int, err error) error {
	if !f.list[i].optional {
		return err
	}
	if !f.dropped[i] {
		f.dropped[i] = true
		f.skipped = append(f.skipped, SkippedProposal{ProposalEntry: f.list[i].entry(), Reason: err})
	}
	return nil
}

// prefer keeps proposal keep over proposal other when they conflict,
// dropping other, or keep when only keep is optional. It returns the index
// kept.
func (f *proposalFilter) prefer(keep, other int, err error) (int, error) {
	if f.list[other].optional {
		return keep, f.drop(other, err)
	}
	if f.list[keep].optional {
		return other, f.drop(keep, err)
	}
	return keep, err
}

// applyProposals validates a proposal list for a Commit by committer
// (RFC 9420 §12.2) and applies it to a copy of the tree (§12.3). Invalid
// optional proposals are left out (and listed in skipped); any other
// invalid proposal fails the list. When several proposals conflict, the
// committer's preferences of §12.2 decide: a Remove over Updates for the
// same leaf, the most recent Update, the last GroupContextExtensions, any
// other proposal over a ReInit.
func (g *Group) applyProposals(list []resolvedProposal, committer Sender) (*appliedProposals, error) {
	external := committer.Type == SenderTypeNewMemberCommit
	f := &proposalFilter{list: list, dropped: make([]bool, len(list))}
	a := &appliedProposals{tree: g.tree.clone(), extensions: g.ctx.Extensions}
	t := a.tree
	fail := func(i int, format string, args ...any) error {
		return f.drop(i, fmt.Errorf("%w: "+format, append([]any{ErrInvalidProposal}, args...)...))
	}

	// Per-proposal rules and conflicts between proposals.
	updates := map[LeafIndex]int{}
	removes := map[LeafIndex]int{}
	psks := map[string]int{}
	gce, reinit, externalInit := -1, -1, -1
	for i, rp := range list {
		var err error
		switch p := rp.proposal.(type) {
		case *AddProposal:
			if external {
				err = fail(i, "add in an external commit")
			}
		case *UpdateProposal:
			l := LeafIndex(rp.sender.Index)
			switch {
			case external:
				err = fail(i, "update in an external commit")
			case rp.sender.Type != SenderTypeMember:
				err = fail(i, "update from a non-member")
			case committer.Type == SenderTypeMember && rp.sender.Index == committer.Index:
				err = fail(i, "committer's own update (the path replaces it)")
			case t.leaf(l) == nil:
				err = fail(i, "update from blank leaf %d", l)
			default:
				if j, ok := updates[l]; ok {
					updates[l], err = f.prefer(i, j, fmt.Errorf("%w: two updates for leaf %d", ErrInvalidProposal, l))
				} else {
					updates[l] = i
				}
			}
		case *RemoveProposal:
			l := p.Removed
			switch {
			case committer.Type == SenderTypeMember && uint32(l) == committer.Index:
				err = fail(i, "committer removes itself")
			case t.leaf(l) == nil:
				err = fail(i, "remove of blank leaf %d", l)
			default:
				if j, ok := removes[l]; ok {
					removes[l], err = f.prefer(j, i, fmt.Errorf("%w: two removes of leaf %d", ErrInvalidProposal, l))
				} else {
					removes[l] = i
				}
			}
		case *PreSharedKeyProposal:
			id := &p.PSK
			enc := string(codec.Marshal(id))
			switch {
			case id.Type == PSKTypeResumption && id.Usage != ResumptionPSKUsageApplication && !rp.successor:
				err = fail(i, "resumption PSK with usage %d in a proposal", id.Usage)
			case len(id.PSKNonce) != g.suite.Nh():
				err = fail(i, "PSK nonce of %d bytes", len(id.PSKNonce))
			default:
				if j, ok := psks[enc]; ok {
					_, err = f.prefer(j, i, fmt.Errorf("%w: the same PSK twice", ErrInvalidProposal))
				} else if rp.optional {
					if _, e := g.resolvePSKs([]PreSharedKeyID{*id}); e != nil {
						err = f.drop(i, e)
						break
					}
					psks[enc] = i
				} else {
					psks[enc] = i
				}
			}
		case *ReInitProposal:
			switch {
			case external:
				err = fail(i, "reinit in an external commit")
			case p.Version < g.ctx.Version:
				err = fail(i, "reinit to an older version")
			case reinit >= 0:
				reinit, err = f.prefer(i, reinit, fmt.Errorf("%w: two reinits", ErrInvalidProposal))
			default:
				reinit = i
			}
		case *ExternalInitProposal:
			switch {
			case !external:
				err = fail(i, "ExternalInit in a member's commit")
			case externalInit >= 0:
				err = fail(i, "two ExternalInits")
			default:
				externalInit = i
			}
		case *GroupContextExtensionsProposal:
			switch {
			case external:
				err = fail(i, "group context extensions in an external commit")
			case gce >= 0:
				gce, err = f.prefer(i, gce, fmt.Errorf("%w: more than one GroupContextExtensions", ErrInvalidProposal))
			default:
				gce = i
			}
		}
		if err != nil {
			return nil, err
		}
	}
	for l, i := range updates {
		if j, ok := removes[l]; ok && !f.dropped[i] && !f.dropped[j] {
			if _, err := f.prefer(j, i, fmt.Errorf("%w: update and remove for leaf %d", ErrInvalidProposal, l)); err != nil {
				return nil, err
			}
		}
	}
	if external {
		if externalInit < 0 {
			return nil, fmt.Errorf("%w: external commit without ExternalInit", ErrInvalidProposal)
		}
		n := 0
		for l, i := range removes {
			if !f.dropped[i] {
				n++
				a.externalRemove = l
			}
		}
		if n > 1 {
			return nil, fmt.Errorf("%w: external commit with %d removes", ErrInvalidProposal, n)
		}
		a.hasExternalRemove = n == 1
	}
	if reinit >= 0 && !f.dropped[reinit] {
		// A ReInit goes alone; a committer prefers the other proposals.
		for i := range list {
			if i == reinit || f.dropped[i] {
				continue
			}
			if _, err := f.prefer(i, reinit, fmt.Errorf("%w: ReInit with other proposals", ErrInvalidProposal)); err != nil {
				return nil, err
			}
			if f.dropped[reinit] {
				break
			}
		}
	}

	// The group context extensions first: every member staying must
	// support them, and added members are checked against them.
	if gce >= 0 && !f.dropped[gce] {
		ext := list[gce].proposal.(*GroupContextExtensionsProposal).Extensions
		var err error
		t.members(func(l LeafIndex, n *LeafNode) {
			if j, ok := removes[l]; ok && !f.dropped[j] || err != nil {
				return
			}
			if e := checkSupports(&n.Capabilities, ext); e != nil {
				err = fmt.Errorf("%w: leaf %d: %w", ErrInvalidProposal, l, e)
			}
		})
		if err == nil {
			a.extensions = ext
		} else if err = f.drop(gce, err); err != nil {
			return nil, err
		}
	}
	for i, rp := range list {
		p, ok := rp.proposal.(*UpdateProposal)
		if !ok || f.dropped[i] {
			continue
		}
		l := LeafIndex(rp.sender.Index)
		old := t.leaf(l)
		var err error
		if bytes.Equal(p.LeafNode.EncryptionKey, old.EncryptionKey) {
			err = fmt.Errorf("%w: update keeps the encryption key", ErrInvalidProposal)
		} else if e := validateLeafNode(g.leafCheck(t, a.extensions, LeafNodeSourceUpdate, l, int64(l)), &p.LeafNode); e != nil {
			err = fmt.Errorf("%w: update from leaf %d: %w", ErrInvalidProposal, l, e)
		}
		if err != nil {
			if err = f.drop(i, err); err != nil {
				return nil, err
			}
			continue
		}
		t.setLeaf(l, &p.LeafNode)
		t.blankPath(l)
	}
	for i, rp := range list {
		p, ok := rp.proposal.(*RemoveProposal)
		if !ok || f.dropped[i] {
			continue
		}
		a.removed = append(a.removed, memberOf(p.Removed, t.leaf(p.Removed)))
		t.removeLeaf(p.Removed)
	}
	for i, rp := range list {
		p, ok := rp.proposal.(*AddProposal)
		if !ok || f.dropped[i] {
			continue
		}
		kp := &p.KeyPackage
		c := g.leafCheck(t, a.extensions, LeafNodeSourceKeyPackage, 0, -1)
		if err := validateKeyPackage(c, kp, g.ctx.Version); err != nil {
			if err = f.drop(i, fmt.Errorf("%w: add: %w", ErrInvalidProposal, err)); err != nil {
				return nil, err
			}
			continue
		}
		leaf := kp.LeafNode
		a.added = append(a.added, t.addLeaf(&leaf))
		a.addedKPs = append(a.addedKPs, kp)
	}

	for i, rp := range list {
		if f.dropped[i] {
			continue
		}
		a.list = append(a.list, rp)
		switch p := rp.proposal.(type) {
		case *UpdateProposal, *RemoveProposal, *GroupContextExtensionsProposal:
			a.pathRequired = true
		case *ExternalInitProposal:
			a.pathRequired = true
			a.externalInit = p
		case *PreSharedKeyProposal:
			a.psks = append(a.psks, p.PSK)
		case *ReInitProposal:
			a.reinit = p
		}
	}
	a.pathRequired = a.pathRequired || len(a.list) == 0
	a.skipped = f.skipped
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
	res := &CommitResult{
		Epoch: g.ctx.Epoch + 1, Committer: committer, Proposals: a.committed(),
		Added: a.added, Removed: a.removed, ReInit: a.reinit,
	}
	if a.pathRequired && c.Path == nil {
		return nil, nil, fmt.Errorf("%w: path required", ErrInvalidCommit)
	}
	if a.hasExternalRemove {
		// A joiner may replace only an old copy of itself (§12.2): the same
		// credential.
		if old := &a.removed[0].Credential; !old.Equal(&c.Path.LeafNode.Credential) {
			return nil, nil, fmt.Errorf("%w: external commit removes a member with another credential", ErrInvalidCommit)
		}
	}
	for _, m := range a.removed {
		if m.Leaf == g.priv.leaf {
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
