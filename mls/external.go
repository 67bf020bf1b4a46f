package mls

import (
	"crypto/rand"
	"fmt"

	"github.com/quicproquo/qpq/mls/cipher"
	"github.com/quicproquo/qpq/mls/codec"
)

// GroupInfoOptions says what a published GroupInfo carries.
type GroupInfoOptions struct {
	// RatchetTree includes the ratchet tree (ratchet_tree extension).
	RatchetTree bool
	// ExternalPub includes the group's external public key (external_pub
	// extension), which lets a non-member join with an external Commit.
	ExternalPub bool
}

// GroupInfo returns a signed GroupInfo for the current epoch
// (RFC 9420 §12.4.3), e.g. to let others join by external Commit.
func (g *Group) GroupInfo(opts GroupInfoOptions) (*GroupInfo, error) {
	var ext Extensions
	if opts.RatchetTree {
		ext = append(ext, Extension{Type: ExtensionTypeRatchetTree, Data: codec.Marshal(g.tree.export())})
	}
	if opts.ExternalPub {
		_, pub, err := externalKeyPair(g.suite, g.secrets.external)
		if err != nil {
			return nil, err
		}
		var b codec.Builder
		b.AddOpaque(pub)
		ext = append(ext, Extension{Type: ExtensionTypeExternalPub, Data: b.Bytes()})
	}
	return g.epochState.groupInfo(g.signer, ext)
}

// ExternalJoinOptions shape an external join. The zero value joins with a
// default leaf and nothing else.
type ExternalJoinOptions struct {
	// Leaf describes the joiner's new leaf.
	Leaf LeafOptions
	// RemovePrior removes, in the same Commit, the member whose
	// credential equals the joiner's: an old copy of this client that lost
	// its state (a resync, RFC 9420 §12.4.3.2). Without such a member it
	// does nothing.
	RemovePrior bool
	// PSKs are injected into the new epoch; cfg.PSKs must hold them. A
	// missing PSKNonce is filled with a random one.
	PSKs []PreSharedKeyID
	// AuthenticatedData is carried, authenticated, with the Commit.
	AuthenticatedData []byte
}

// JoinExternal joins a group by external Commit from a GroupInfo that
// carries the group's external_pub (RFC 9420 §12.4.3.2). tree is the ratchet
// tree when the GroupInfo does not carry it. It returns the joiner's group
// with the Commit pending: send the PendingCommit's Message to the group
// and call the Group's MergePendingCommit once the delivery service
// accepted it. Until then the group can do nothing else.
func JoinExternal(gi *GroupInfo, tree RatchetTree, signer cipher.Signer, cred Credential, opts ExternalJoinOptions, cfg Config) (*Group, *PendingCommit, error) {
	gc := &gi.GroupContext
	s, err := cipher.Lookup(gc.CipherSuite)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	if gc.Version != MLS10 {
		return nil, nil, fmt.Errorf("%w: version %d", ErrUnsupported, gc.Version)
	}
	data, ok := gi.Extensions.Find(ExtensionTypeExternalPub)
	if !ok {
		return nil, nil, fmt.Errorf("%w: group info has no external_pub", ErrInvalidProposal)
	}
	r := codec.NewReader(data)
	externalPub := r.Opaque(MaxKeySize)
	if err := r.Finish(); err != nil {
		return nil, nil, fmt.Errorf("%w: external_pub: %w", ErrMalformed, err)
	}
	g, err := groupFromInfo(s, gi, tree, signer, cfg)
	if err != nil {
		return nil, nil, err
	}

	kemOutput, initSecret, err := s.HPKEExportSender(externalPub, nil, []byte(externalInitLabel), s.Nh())
	if err != nil {
		return nil, nil, err
	}
	defer wipe(initSecret)
	me := Sender{Type: SenderTypeNewMemberCommit}
	list := []resolvedProposal{{proposal: &ExternalInitProposal{KEMOutput: kemOutput}, sender: me}}
	if opts.RemovePrior {
		g.tree.members(func(l LeafIndex, n *LeafNode) {
			if n.Credential.Equal(&cred) {
				list = append(list, resolvedProposal{proposal: &RemoveProposal{Removed: l}, sender: me})
			}
		})
	}
	for _, id := range opts.PSKs {
		if id.PSKNonce == nil {
			id.PSKNonce = make([]byte, s.Nh())
			if _, err := rand.Read(id.PSKNonce); err != nil {
				return nil, nil, err
			}
		}
		list = append(list, resolvedProposal{proposal: &PreSharedKeyProposal{PSK: id}, sender: me})
	}
	a, err := g.applyProposals(list, me)
	if err != nil {
		return nil, nil, err
	}
	kp, err := NewKeyPackage(gc.CipherSuite, signer, cred, opts.Leaf, nil)
	if err != nil {
		return nil, nil, err
	}
	leaf := kp.KeyPackage.LeafNode
	if err := checkSupports(&leaf.Capabilities, a.extensions); err != nil {
		return nil, nil, fmt.Errorf("%w: this client does not support the group: %w", ErrUnsupported, err)
	}
	nt := a.tree
	myLeaf := nt.addLeaf(&leaf)
	ctx := GroupContext{
		Version: gc.Version, CipherSuite: gc.CipherSuite, GroupID: gc.GroupID,
		Epoch: gc.Epoch + 1, ConfirmedTranscriptHash: gc.ConfirmedTranscriptHash, Extensions: a.extensions,
	}
	path, err := nt.createPath(myLeaf, leaf, signer, gc.GroupID, func(treeHash []byte) []byte {
		c := ctx
		c.TreeHash = treeHash
		return codec.Marshal(&c)
	}, nil)
	if err != nil {
		return nil, nil, err
	}
	defer wipe(path.commitSecret)
	ctx.TreeHash = nt.rootHash()
	psks, err := g.resolvePSKs(a.psks)
	if err != nil {
		return nil, nil, err
	}
	psk := pskSecret(s, psks)
	defer wipe(psk)

	commit := &Commit{Path: path.path}
	for _, rp := range a.list {
		commit.Proposals = append(commit.Proposals, ProposalOrRef{Proposal: rp.proposal})
	}
	ac := &AuthenticatedContent{WireFormat: WireFormatPublicMessage, Content: FramedContent{
		GroupID: gc.GroupID, Epoch: gc.Epoch, Sender: me, AuthenticatedData: opts.AuthenticatedData,
		ContentType: ContentTypeCommit, Commit: commit,
	}}
	if ac.Auth.Signature, err = signContent(signer, ac.WireFormat, &ac.Content, g.ctxBytes); err != nil {
		return nil, nil, err
	}
	next := &epochState{tree: nt, priv: path.priv}
	ctx.ConfirmedTranscriptHash = confirmedTranscriptHash(s, g.interim, ac)
	next.setContext(ctx)
	joiner := joinerSecret(s, initSecret, path.commitSecret, next.ctxBytes)
	defer wipe(joiner)
	welcome, secrets := welcomeAndEpoch(s, joiner, psk, next.ctxBytes)
	wipe(welcome)
	ac.Auth.ConfirmationTag = confirmationTag(s, secrets.confirmation, ctx.ConfirmedTranscriptHash)
	next.secrets = secrets
	next.secretTree = newSecretTree(s, cfg.Ratchet, secrets.encryption, nt.numLeaves())
	next.confirmationTag = ac.Auth.ConfirmationTag
	next.interim = interimTranscriptHash(s, ctx.ConfirmedTranscriptHash, ac.Auth.ConfirmationTag)

	pm, err := toPublic(s, ac, nil, nil)
	if err != nil {
		return nil, nil, err
	}
	pc := &PendingCommit{
		Message: &MLSMessage{Version: MLS10, WireFormat: WireFormatPublicMessage, PublicMessage: pm},
		epoch:   gc.Epoch, next: next,
		result: &CommitResult{
			Epoch: ctx.Epoch, Committer: me, Proposals: a.committed(),
			Added: []LeafIndex{myLeaf}, Removed: a.removed,
		},
	}
	if pc.GroupInfo, err = next.groupInfo(signer, nil); err != nil {
		return nil, nil, err
	}
	// Until merged, the joiner's group holds the pre-join epoch, which it
	// cannot use: it has no keys in it.
	g.priv = newPrivateTree(myLeaf, nil, nil)
	g.secrets = epochSecrets{}
	g.secretTree = newSecretTree(s, cfg.Ratchet, make([]byte, s.Nh()), g.tree.numLeaves())
	g.joining = true
	g.pending = pc
	return g, pc, nil
}

// groupFromInfo builds the public state of a group from a GroupInfo and
// its ratchet tree (the tree argument when the GroupInfo does not carry
// one), after verifying the GroupInfo's signature and the tree.
func groupFromInfo(s cipher.Suite, gi *GroupInfo, tree RatchetTree, signer cipher.Signer, cfg Config) (*Group, error) {
	if rt, ok := gi.Extensions.Find(ExtensionTypeRatchetTree); ok {
		tree = nil
		if err := decode(rt, &tree, "ratchet_tree extension"); err != nil {
			return nil, err
		}
	}
	if tree == nil {
		return nil, fmt.Errorf("%w: no ratchet tree", ErrInvalidTree)
	}
	t, err := importRatchetTree(s, tree)
	if err != nil {
		return nil, err
	}
	signerLeaf := t.leaf(gi.Signer)
	if signerLeaf == nil {
		return nil, fmt.Errorf("%w: group info signer %d is not a member", ErrInvalidTree, gi.Signer)
	}
	if err := verifyGroupInfo(s, gi, signerLeaf.SignatureKey); err != nil {
		return nil, err
	}
	g := &Group{suite: s, cfg: cfg, signer: signer}
	g.setContext(gi.GroupContext.clone())
	g.tree = t
	if err := g.validateJoinedTree(t); err != nil {
		return nil, err
	}
	g.interim = interimTranscriptHash(s, gi.GroupContext.ConfirmedTranscriptHash, gi.ConfirmationTag)
	return g, nil
}

// ExternalProposal returns a proposal by an external sender — the one at
// index in the group's external_senders extension, whose key signer holds
// — for the epoch that gi describes (RFC 9420 §12.1.8.1). Add, Remove,
// PreSharedKey, ReInit and GroupContextExtensions proposals may be sent so.
// gi is not verified: the group checks the proposal.
func ExternalProposal(gi *GroupInfo, signer cipher.Signer, index uint32, p Proposal) (*MLSMessage, error) {
	return signedPublicProposal(gi, signer, Sender{Type: SenderTypeExternal, Index: index}, p)
}

// JoinProposal returns the Add proposal by which the client of kp asks to
// join the group that gi describes (a new_member_proposal sender,
// RFC 9420 §12.1.8.2). A member commits it like any other proposal; kp's
// bundle then joins from the Welcome.
func JoinProposal(gi *GroupInfo, kp *KeyPackageBundle) (*MLSMessage, error) {
	return signedPublicProposal(gi, kp.Signer, Sender{Type: SenderTypeNewMemberProposal}, &AddProposal{KeyPackage: *kp.KeyPackage})
}

func signedPublicProposal(gi *GroupInfo, signer cipher.Signer, sender Sender, p Proposal) (*MLSMessage, error) {
	gc := &gi.GroupContext
	if _, err := cipher.Lookup(gc.CipherSuite); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	ac := &AuthenticatedContent{WireFormat: WireFormatPublicMessage, Content: FramedContent{
		GroupID: clone(gc.GroupID), Epoch: gc.Epoch, Sender: sender, ContentType: ContentTypeProposal, Proposal: p,
	}}
	var err error
	if ac.Auth.Signature, err = signContent(signer, ac.WireFormat, &ac.Content, nil); err != nil {
		return nil, err
	}
	return &MLSMessage{Version: MLS10, WireFormat: WireFormatPublicMessage, PublicMessage: &PublicMessage{Content: ac.Content, Auth: ac.Auth}}, nil
}
