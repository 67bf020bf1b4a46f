package mls

import (
	"crypto/rand"
	"fmt"
	"time"

	"github.com/quicproquo/qpq/mls/cipher"
	"github.com/quicproquo/qpq/mls/codec"
)

// DefaultKeyPackageLifetime is how long a KeyPackage made without an
// explicit lifetime is valid.
const DefaultKeyPackageLifetime = 90 * 24 * time.Hour

// LeafOptions says what a new LeafNode carries. The zero value gives a
// leaf with default capabilities, no extensions and the default lifetime.
type LeafOptions struct {
	// Capabilities defaults to mls10, every registered cipher suite, the
	// credential's type and nothing else.
	Capabilities *Capabilities
	// Extensions are the leaf's extensions; their non-default types are
	// added to the capabilities.
	Extensions Extensions
	// NotBefore and NotAfter bound a KeyPackage leaf's lifetime; zero
	// means from an hour ago to DefaultKeyPackageLifetime from now.
	NotBefore, NotAfter time.Time
}

func (o *LeafOptions) capabilities(cred *Credential) Capabilities {
	var c Capabilities
	if o.Capabilities != nil {
		c = *o.Capabilities
	} else {
		c.Versions = []ProtocolVersion{MLS10}
		c.CipherSuites = cipher.Registered()
		c.Credentials = []CredentialType{CredentialTypeBasic}
	}
	if !contains(c.Credentials, cred.Type) {
		c.Credentials = append(append([]CredentialType(nil), c.Credentials...), cred.Type)
	}
	for _, e := range o.Extensions {
		if !e.Type.isDefault() && !contains(c.Extensions, e.Type) {
			c.Extensions = append(append([]ExtensionType(nil), c.Extensions...), e.Type)
		}
	}
	return c
}

func (o *LeafOptions) lifetime() Lifetime {
	nb, na := o.NotBefore, o.NotAfter
	if nb.IsZero() {
		nb = time.Now().Add(-time.Hour)
	}
	if na.IsZero() {
		na = time.Now().Add(DefaultKeyPackageLifetime)
	}
	return Lifetime{NotBefore: uint64(nb.Unix()), NotAfter: uint64(na.Unix())}
}

// NewKeyPackage makes a signed KeyPackage for suite with fresh init and
// leaf keys (RFC 9420 §10). extensions are the KeyPackage's own extensions.
func NewKeyPackage(suite CipherSuite, signer cipher.Signer, cred Credential, opts LeafOptions, extensions Extensions) (*KeyPackageBundle, error) {
	s, err := cipher.Lookup(suite)
	if err != nil {
		return nil, err
	}
	initPriv, initPub, err := s.GenerateKEMKey()
	if err != nil {
		return nil, err
	}
	encPriv, encPub, err := s.GenerateKEMKey()
	if err != nil {
		return nil, err
	}
	leaf := LeafNode{
		EncryptionKey: encPub,
		SignatureKey:  signer.Public(),
		Credential:    cred,
		Capabilities:  opts.capabilities(&cred),
		Source:        LeafNodeSourceKeyPackage,
		Lifetime:      opts.lifetime(),
		Extensions:    opts.Extensions,
	}
	for _, e := range extensions {
		if !e.Type.isDefault() && !contains(leaf.Capabilities.Extensions, e.Type) {
			leaf.Capabilities.Extensions = append(leaf.Capabilities.Extensions, e.Type)
		}
	}
	if err := signLeaf(signer, &leaf, nil, 0); err != nil {
		return nil, err
	}
	kp := &KeyPackage{Version: MLS10, CipherSuite: suite, InitKey: initPub, LeafNode: leaf, Extensions: extensions}
	if kp.Signature, err = cipher.SignWithLabel(signer, labelKeyPackageTBS, kp.tbs()); err != nil {
		return nil, err
	}
	return &KeyPackageBundle{KeyPackage: kp, InitPriv: initPriv, EncryptionPriv: encPriv, Signer: signer}, nil
}

// NewGroup creates a group whose only member is the caller (RFC 9420 §11).
// The creator's leaf is made like a KeyPackage's.
func NewGroup(suite CipherSuite, groupID []byte, signer cipher.Signer, cred Credential, opts LeafOptions, extensions Extensions, cfg Config) (*Group, error) {
	kp, err := NewKeyPackage(suite, signer, cred, opts, nil)
	if err != nil {
		return nil, err
	}
	s, _ := cipher.Lookup(suite)
	if len(groupID) == 0 || len(groupID) > MaxGroupIDSize {
		return nil, fmt.Errorf("mls: group ID of %d bytes", len(groupID))
	}
	leaf := kp.KeyPackage.LeafNode
	if err := checkSupports(&leaf.Capabilities, extensions); err != nil {
		return nil, fmt.Errorf("%w: creator does not support the group extensions: %w", ErrUnsupported, err)
	}
	g := &Group{suite: s, cfg: cfg, signer: signer}
	g.tree = newRatchetTree(s, &leaf)
	g.priv = newPrivateTree(0, kp.EncryptionPriv, leaf.EncryptionKey)
	g.setContext(GroupContext{
		Version: MLS10, CipherSuite: suite, GroupID: clone(groupID), Epoch: 0,
		TreeHash: g.tree.rootHash(), Extensions: extensions,
	})
	epoch := make([]byte, s.Nh())
	if _, err := rand.Read(epoch); err != nil {
		return nil, err
	}
	g.secrets = deriveEpochSecrets(s, epoch)
	wipe(epoch)
	g.secretTree = newSecretTree(s, cfg.Ratchet, g.secrets.encryption, 1)
	g.confirmationTag = confirmationTag(s, g.secrets.confirmation, nil)
	g.interim = interimTranscriptHash(s, nil, g.confirmationTag)
	g.rememberResumption()
	return g, nil
}

// frame builds, signs and protects content from this member in the current
// epoch.
func (g *Group) frame(fc FramedContent, wf WireFormat) (*AuthenticatedContent, error) {
	fc.GroupID = g.ctx.GroupID
	fc.Epoch = g.ctx.Epoch
	fc.Sender = Sender{Type: SenderTypeMember, Index: uint32(g.priv.leaf)}
	ac := &AuthenticatedContent{WireFormat: wf, Content: fc}
	sig, err := signContent(g.signer, wf, &ac.Content, g.ctxBytes)
	if err != nil {
		return nil, err
	}
	ac.Auth.Signature = sig
	return ac, nil
}

// protect wraps a signed (and, for commits, confirmed) content for the wire.
func (g *Group) protect(ac *AuthenticatedContent, padding int) (*MLSMessage, error) {
	m := &MLSMessage{Version: MLS10, WireFormat: ac.WireFormat}
	var err error
	if ac.WireFormat == WireFormatPublicMessage {
		m.PublicMessage, err = toPublic(g.suite, ac, g.secrets.membership, g.ctxBytes)
	} else {
		m.PrivateMessage, err = toPrivate(g.suite, g.secretTree, g.secrets.senderData, ac, padding)
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

// ErrPendingProposals: application data may not be sent while proposals of
// this epoch wait for a Commit (RFC 9420 §12.4).
var ErrPendingProposals = fmt.Errorf("mls: proposals are pending; commit them before sending application data")

// Encrypt protects application data as a PrivateMessage from this member,
// with padding zero bytes of padding (RFC 9420 §6.3, §15.1).
func (g *Group) Encrypt(data, authenticatedData []byte, padding int) (*MLSMessage, error) {
	if len(g.proposals) > 0 {
		return nil, ErrPendingProposals
	}
	if g.reinit != nil {
		return nil, fmt.Errorf("%w: group was re-initialized", ErrWrongEpoch)
	}
	ac, err := g.frame(FramedContent{AuthenticatedData: authenticatedData, ContentType: ContentTypeApplication, ApplicationData: data}, WireFormatPrivateMessage)
	if err != nil {
		return nil, err
	}
	return g.protect(ac, padding)
}

// Propose sends a proposal from this member in wire format wf and caches
// it, as every member does, for the Commit that will name it. For an
// Update, use ProposeUpdate.
func (g *Group) Propose(p Proposal, wf WireFormat) (*MLSMessage, []byte, error) {
	if _, ok := p.(*UpdateProposal); ok {
		return nil, nil, fmt.Errorf("mls: use ProposeUpdate for updates")
	}
	return g.propose(p, wf)
}

func (g *Group) propose(p Proposal, wf WireFormat) (*MLSMessage, []byte, error) {
	ac, err := g.frame(FramedContent{ContentType: ContentTypeProposal, Proposal: p}, wf)
	if err != nil {
		return nil, nil, err
	}
	m, err := g.protect(ac, 0)
	if err != nil {
		return nil, nil, err
	}
	ref, err := g.cacheProposal(ac)
	if err != nil {
		return nil, nil, err
	}
	return m, ref, nil
}

// ProposeUpdate proposes a fresh encryption key for this member's leaf,
// keeping the rest of the leaf. The new private key is kept until a
// Commit applies the update or the epoch ends.
func (g *Group) ProposeUpdate(wf WireFormat) (*MLSMessage, []byte, error) {
	priv, pub, err := g.suite.GenerateKEMKey()
	if err != nil {
		return nil, nil, err
	}
	leaf := *g.tree.leaf(g.priv.leaf)
	leaf.EncryptionKey = pub
	leaf.Source = LeafNodeSourceUpdate
	leaf.Lifetime = Lifetime{}
	leaf.ParentHash = nil
	if err := signLeaf(g.signer, &leaf, g.ctx.GroupID, g.priv.leaf); err != nil {
		return nil, nil, err
	}
	m, ref, err := g.propose(&UpdateProposal{LeafNode: leaf}, wf)
	if err != nil {
		return nil, nil, err
	}
	g.pendingUpdates = append(g.pendingUpdates, nodeKey{priv: priv, pub: pub})
	return m, ref, nil
}

// CommitOptions shape a Commit. The zero value commits every cached
// proposal by reference, as a PublicMessage, with a path only when one is
// required, and without the ratchet tree in the Welcome's GroupInfo.
type CommitOptions struct {
	// Proposals are added by value, after the cached ones.
	Proposals []Proposal
	// SkipCached leaves the proposals received this epoch out.
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
}

// PendingCommit is a Commit this member created: the group moves to the
// epoch it begins only when the caller confirms, with MergePendingCommit,
// that the delivery service accepted it (RFC 9420 §14).
type PendingCommit struct {
	// Message is the Commit to send to the group.
	Message *MLSMessage
	// Welcome, when the Commit adds members, is sent to them once the
	// Commit is accepted.
	Welcome *Welcome
	// GroupInfo describes the new epoch (signed).
	GroupInfo *GroupInfo

	epoch  uint64 // the epoch the commit was made in
	next   *epochState
	result *CommitResult
}

// Commit creates a Commit of cached and given proposals (RFC 9420
// §12.4.1). It does not change the group's epoch; see MergePendingCommit.
func (g *Group) Commit(opts CommitOptions) (*PendingCommit, error) {
	s := g.suite
	if g.reinit != nil {
		return nil, fmt.Errorf("%w: group was re-initialized", ErrWrongEpoch)
	}
	wf := opts.WireFormat
	if wf == 0 {
		wf = WireFormatPublicMessage
	}
	me := Sender{Type: SenderTypeMember, Index: uint32(g.priv.leaf)}
	commit := &Commit{}
	var list []resolvedProposal
	if !opts.SkipCached {
		for _, cp := range g.proposals {
			if cp.sender == me {
				if _, ok := cp.proposal.(*UpdateProposal); ok {
					continue // superseded by the path
				}
			}
			if rm, ok := cp.proposal.(*RemoveProposal); ok && rm.Removed == g.priv.leaf {
				continue
			}
			commit.Proposals = append(commit.Proposals, ProposalOrRef{Reference: cp.ref})
			list = append(list, resolvedProposal{proposal: cp.proposal, sender: cp.sender})
		}
	}
	for _, p := range opts.Proposals {
		commit.Proposals = append(commit.Proposals, ProposalOrRef{Proposal: p})
		list = append(list, resolvedProposal{proposal: p, sender: me})
	}
	a, err := g.applyProposals(list, me)
	if err != nil {
		return nil, err
	}
	for _, l := range a.removed {
		if l == g.priv.leaf {
			return nil, fmt.Errorf("%w: commit would remove its committer", ErrInvalidProposal)
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
		Message: msg, epoch: g.ctx.Epoch, next: next,
		result: &CommitResult{Epoch: ctx.Epoch, Added: a.added, Removed: a.removed, ReInit: a.reinit},
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

// MergePendingCommit moves the group to the epoch of a Commit it created,
// once the delivery service accepted that Commit. A PendingCommit of an
// earlier epoch (another Commit won) is refused with ErrWrongEpoch.
func (g *Group) MergePendingCommit(pc *PendingCommit) (*CommitResult, error) {
	if pc.epoch != g.ctx.Epoch || pc.next == nil {
		return nil, fmt.Errorf("%w: pending commit was made in epoch %d, group is at %d", ErrWrongEpoch, pc.epoch, g.ctx.Epoch)
	}
	g.advance(pc.next)
	g.reinit = pc.result.ReInit
	pc.next = nil
	return pc.result, nil
}
