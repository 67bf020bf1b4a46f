package mls

import (
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

// JoinExternal joins a group by external Commit from a GroupInfo that
// carries the group's external_pub (RFC 9420 §12.4.3.2). tree is the ratchet
// tree when the GroupInfo does not carry it. It returns the joiner's group
// in the new epoch as a PendingCommit: send its Message to the group and
// merge it into the returned Group once the delivery service accepted it.
func JoinExternal(gi *GroupInfo, tree RatchetTree, signer cipher.Signer, cred Credential, opts LeafOptions, cfg Config) (*Group, *PendingCommit, error) {
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
	if rt, ok := gi.Extensions.Find(ExtensionTypeRatchetTree); ok {
		tree = nil
		if err := decode(rt, &tree, "ratchet_tree extension"); err != nil {
			return nil, nil, err
		}
	}
	if tree == nil {
		return nil, nil, fmt.Errorf("%w: no ratchet tree", ErrInvalidTree)
	}
	t, err := importRatchetTree(s, tree)
	if err != nil {
		return nil, nil, err
	}
	signerLeaf := t.leaf(gi.Signer)
	if signerLeaf == nil {
		return nil, nil, fmt.Errorf("%w: group info signer %d is not a member", ErrInvalidTree, gi.Signer)
	}
	if err := verifyGroupInfo(s, gi, signerLeaf.SignatureKey); err != nil {
		return nil, nil, err
	}
	// The group as the joiner sees it before joining: public state only.
	g := &Group{suite: s, cfg: cfg, signer: signer}
	g.setContext(gc.clone())
	g.tree = t
	if err := g.validateJoinedTree(t); err != nil {
		return nil, nil, err
	}
	g.interim = interimTranscriptHash(s, gc.ConfirmedTranscriptHash, gi.ConfirmationTag)

	kemOutput, initSecret, err := s.HPKEExportSender(externalPub, nil, []byte(externalInitLabel), s.Nh())
	if err != nil {
		return nil, nil, err
	}
	defer wipe(initSecret)
	me := Sender{Type: SenderTypeNewMemberCommit}
	ei := &ExternalInitProposal{KEMOutput: kemOutput}
	a, err := g.applyProposals([]resolvedProposal{{proposal: ei, sender: me}}, me)
	if err != nil {
		return nil, nil, err
	}
	kp, err := NewKeyPackage(gc.CipherSuite, signer, cred, opts, nil)
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
	psk := pskSecret(s, nil)

	commit := &Commit{Proposals: []ProposalOrRef{{Proposal: ei}}, Path: path.path}
	ac := &AuthenticatedContent{WireFormat: WireFormatPublicMessage, Content: FramedContent{
		GroupID: gc.GroupID, Epoch: gc.Epoch, Sender: me, ContentType: ContentTypeCommit, Commit: commit,
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
		result: &CommitResult{Epoch: ctx.Epoch, Added: []LeafIndex{myLeaf}},
	}
	if pc.GroupInfo, err = next.groupInfo(signer, nil); err != nil {
		return nil, nil, err
	}
	// Until merged, the joiner's group holds the pre-join epoch, which it
	// cannot use: it has no keys in it.
	g.priv = newPrivateTree(myLeaf, nil, nil)
	g.secrets = epochSecrets{}
	g.secretTree = newSecretTree(s, cfg.Ratchet, make([]byte, s.Nh()), t.numLeaves())
	g.joining = true
	return g, pc, nil
}
