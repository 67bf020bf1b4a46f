package mls

import (
	"fmt"

	"github.com/quicproquo/qpq/mls/cipher"
	"github.com/quicproquo/qpq/mls/codec"
)

// CommitOptions shape a Commit. The zero value commits every valid cached
// proposal by reference, as a PublicMessage, with a path only when one is
// required, and without the ratchet tree in the Welcome's GroupInfo.
type CommitOptions struct {
	// Proposals are added by value, after the cached ones. They must be
	// valid: an invalid one fails the Commit.
	Proposals []Proposal
	// ByReference, when not nil, commits exactly these cached proposals
	// (by their references), each of which must be valid. When nil, the
	// Commit covers every cached proposal that is valid for it and skips
	// the rest (PendingCommit.Skipped says which and why), as RFC 9420
	// §12.2 asks of a committer.
	ByReference [][]byte
	// SkipCached leaves the proposals cached this epoch out.
	SkipCached bool
	// ForcePath includes an UpdatePath even when none is required.
	ForcePath bool
	// WireFormat is WireFormatPublicMessage (the default) or
	// WireFormatPrivateMessage.
	WireFormat WireFormat
	// RatchetTreeInWelcome puts the ratchet tree in the Welcome's
	// GroupInfo, so joiners need no other source for it.
	RatchetTreeInWelcome bool
	// AuthenticatedData is carried, authenticated, with the Commit.
	AuthenticatedData []byte
	// Padding is the zero padding of a PrivateMessage commit.
	Padding int

	// successorPSK is the reinit or branch PSK of a new group's first
	// Commit (Reinitialize, Branch).
	successorPSK *PreSharedKeyID
}

// PendingCommit is a Commit this member created: the group moves to the
// epoch it begins only when the caller confirms, with MergePendingCommit,
// that the delivery service accepted it (RFC 9420 §14). It is part of the
// group's persisted state until merged or discarded.
type PendingCommit struct {
	// Message is the Commit to send to the group.
	Message *MLSMessage
	// Welcome, when the Commit adds members, is sent to them once the
	// Commit is accepted.
	Welcome *Welcome
	// GroupInfo describes the new epoch (signed).
	GroupInfo *GroupInfo
	// Skipped lists the cached proposals left out as invalid.
	Skipped []SkippedProposal

	epoch   uint64 // the epoch the commit was made in
	next    *epochState
	result  *CommitResult
	byValue []Proposal // to hand back for a retry if the commit loses
}

// RatchetTree returns the public ratchet tree of the epoch the Commit
// begins, for joiners that do not get it in the Welcome.
func (pc *PendingCommit) RatchetTree() RatchetTree {
	if pc.next == nil {
		return nil
	}
	return pc.next.tree.export()
}

// Epoch returns the epoch the Commit was made in; it begins the next one.
func (pc *PendingCommit) Epoch() uint64 { return pc.epoch }

// PendingCommit returns this member's Commit that awaits confirmation, or
// nil.
func (g *Group) PendingCommit() *PendingCommit { return g.pending }

// Commit creates a Commit of cached and given proposals (RFC 9420
// §12.4.1) and keeps it pending: the group's epoch does not change until
// MergePendingCommit. While it is pending the group keeps working in the
// current epoch; a Commit of another member processed meanwhile wins, and
// the pending one is discarded (CommitResult.PendingDiscarded).
func (g *Group) Commit(opts CommitOptions) (*PendingCommit, error) {
	if err := g.usable(); err != nil {
		return nil, err
	}
	if g.pending != nil {
		return nil, ErrCommitPending
	}
	pc, err := g.commit(opts)
	if err != nil {
		return nil, err
	}
	g.pending = pc
	return pc, nil
}

// MergePendingCommit moves the group to the epoch of its pending Commit,
// once the delivery service accepted that Commit.
func (g *Group) MergePendingCommit() (*CommitResult, error) {
	pc := g.pending
	if pc == nil {
		return nil, ErrNoPendingCommit
	}
	if pc.epoch != g.ctx.Epoch {
		// Not reachable through the API: processing a Commit discards
		// the pending one.
		return nil, fmt.Errorf("%w: pending commit of epoch %d, group is at %d", ErrStaleCommit, pc.epoch, g.ctx.Epoch)
	}
	res := *pc.result
	res.Retry = g.ownUnapplied(res.Proposals)
	g.advance(pc.next)
	g.reinit = res.ReInit
	g.joining = false
	g.pending = nil
	pc.next = nil
	return &res, nil
}

// DiscardPendingCommit drops the pending Commit, e.g. when the delivery
// service refused it because another Commit won the epoch, and returns its
// by-value proposals so they can be proposed or committed again. The
// proposals it named by reference stay cached.
func (g *Group) DiscardPendingCommit() []Proposal {
	if g.pending == nil {
		return nil
	}
	return g.discardPending()
}

func (g *Group) discardPending() []Proposal {
	pc := g.pending
	g.pending = nil
	if pc.next != nil {
		pc.next.wipe()
		pc.next = nil
	}
	return pc.byValue
}

// commit builds a Commit; see Commit.
func (g *Group) commit(opts CommitOptions) (*PendingCommit, error) {
	s := g.suite
	wf := opts.WireFormat
	if wf == 0 {
		wf = WireFormatPublicMessage
	}
	me := Sender{Type: SenderTypeMember, Index: uint32(g.priv.leaf)}
	var list []resolvedProposal
	switch {
	case opts.ByReference != nil:
		for _, ref := range opts.ByReference {
			cp := g.cachedProposal(ref)
			if cp == nil {
				return nil, ErrUnknownProposal
			}
			list = append(list, resolvedProposal{proposal: cp.Proposal, sender: cp.Sender, ref: cp.Ref})
		}
	case !opts.SkipCached:
		for _, cp := range g.proposals {
			list = append(list, resolvedProposal{proposal: cp.Proposal, sender: cp.Sender, ref: cp.Ref, optional: true})
		}
	}
	for _, p := range opts.Proposals {
		list = append(list, resolvedProposal{proposal: p, sender: me})
	}
	if opts.successorPSK != nil {
		list = append(list, resolvedProposal{proposal: &PreSharedKeyProposal{PSK: *opts.successorPSK}, sender: me, successor: true})
	}
	a, err := g.applyProposals(list, me)
	if err != nil {
		return nil, err
	}
	commit := &Commit{}
	for _, rp := range a.list {
		if rp.ref != nil {
			commit.Proposals = append(commit.Proposals, ProposalOrRef{Reference: rp.ref})
		} else {
			commit.Proposals = append(commit.Proposals, ProposalOrRef{Proposal: rp.proposal})
		}
	}
	t := a.tree
	next := &epochState{tree: t}
	ctx := GroupContext{
		Version: g.ctx.Version, CipherSuite: g.ctx.CipherSuite, GroupID: g.ctx.GroupID,
		Epoch: g.ctx.Epoch + 1, ConfirmedTranscriptHash: g.ctx.ConfirmedTranscriptHash, Extensions: a.extensions,
	}
	commitSecret := make([]byte, s.Nh())
	var path *createdPath
	if a.pathRequired || opts.ForcePath {
		leaf := *t.leaf(g.priv.leaf)
		path, err = t.createPath(g.priv.leaf, leaf, g.signer, g.ctx.GroupID, func(treeHash []byte) []byte {
			c := ctx
			c.TreeHash = treeHash
			return codec.Marshal(&c)
		}, a.added)
		if err != nil {
			return nil, err
		}
		commit.Path = path.path
		commitSecret = path.commitSecret
		next.priv = path.priv
	} else {
		next.priv = g.priv.clone()
	}
	next.priv.prune(t)
	defer wipe(commitSecret)
	ctx.TreeHash = t.rootHash()

	psks, err := g.resolvePSKs(a.psks)
	if err != nil {
		return nil, err
	}
	psk := pskSecret(s, psks)
	defer wipe(psk)

	ac, err := g.frame(FramedContent{AuthenticatedData: opts.AuthenticatedData, ContentType: ContentTypeCommit, Commit: commit}, wf)
	if err != nil {
		return nil, err
	}
	ctx.ConfirmedTranscriptHash = confirmedTranscriptHash(s, g.interim, ac)
	next.setContext(ctx)
	joiner := joinerSecret(s, g.secrets.init, commitSecret, next.ctxBytes)
	defer wipe(joiner)
	welcomeSecret, secrets := welcomeAndEpoch(s, joiner, psk, next.ctxBytes)
	defer wipe(welcomeSecret)
	ac.Auth.ConfirmationTag = confirmationTag(s, secrets.confirmation, ctx.ConfirmedTranscriptHash)
	next.secrets = secrets
	next.secretTree = newSecretTree(s, g.cfg.Ratchet, secrets.encryption, t.numLeaves())
	next.confirmationTag = ac.Auth.ConfirmationTag
	next.interim = interimTranscriptHash(s, ctx.ConfirmedTranscriptHash, ac.Auth.ConfirmationTag)

	msg, err := g.protect(ac, opts.Padding)
	if err != nil {
		return nil, err
	}
	pc := &PendingCommit{
		Message: msg, Skipped: a.skipped, epoch: g.ctx.Epoch, next: next, byValue: opts.Proposals,
		result: &CommitResult{
			Epoch: ctx.Epoch, Committer: me, Proposals: a.committed(),
			Added: a.added, Removed: a.removed, ReInit: a.reinit, Skipped: a.skipped,
		},
	}
	var giExt Extensions
	if opts.RatchetTreeInWelcome {
		giExt = Extensions{{Type: ExtensionTypeRatchetTree, Data: codec.Marshal(t.export())}}
	}
	if pc.GroupInfo, err = next.groupInfo(g.signer, giExt); err != nil {
		return nil, err
	}
	if len(a.added) > 0 {
		pc.Welcome, err = g.welcome(next, pc.GroupInfo, welcomeSecret, joiner, a, path)
		if err != nil {
			return nil, err
		}
	}
	return pc, nil
}

// wipe deletes the secrets of an epoch state that will not be used.
func (e *epochState) wipe() {
	e.secrets.wipe()
	if e.secretTree != nil {
		e.secretTree.wipeAll()
	}
	if e.priv != nil {
		for _, k := range e.priv.keys {
			wipe(k.priv)
		}
	}
}

// groupInfo returns the signed GroupInfo of an epoch state.
func (e *epochState) groupInfo(signer cipher.Signer, ext Extensions) (*GroupInfo, error) {
	gi := &GroupInfo{
		GroupContext:    e.ctx.clone(),
		Extensions:      ext,
		ConfirmationTag: clone(e.confirmationTag),
		Signer:          e.priv.leaf,
	}
	if err := signGroupInfo(signer, gi); err != nil {
		return nil, err
	}
	return gi, nil
}

// welcome encrypts the new epoch's GroupInfo and each new member's
// GroupSecrets (RFC 9420 §12.4.3.1).
func (g *Group) welcome(next *epochState, gi *GroupInfo, welcomeSecret, joiner []byte, a *appliedProposals, path *createdPath) (*Welcome, error) {
	s := g.suite
	egi, err := sealGroupInfo(s, welcomeSecret, gi)
	if err != nil {
		return nil, err
	}
	w := &Welcome{CipherSuite: s.ID(), EncryptedGroupInfo: egi}
	for i, l := range a.added {
		kp := a.addedKPs[i]
		gs := GroupSecrets{JoinerSecret: joiner, PSKs: a.psks}
		if path != nil {
			gs.PathSecret = &PathSecret{PathSecret: path.pathSecretFor(g.priv.leaf, l, next.tree.numLeaves())}
		}
		ct, err := sealGroupSecrets(s, kp.InitKey, &gs, egi)
		if err != nil {
			return nil, err
		}
		w.Secrets = append(w.Secrets, EncryptedGroupSecrets{NewMember: keyPackageRef(s, kp), EncryptedGroupSecrets: ct})
	}
	return w, nil
}
