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
	// ExtensionTypes are added to the capabilities: the application's own
	// group context extensions (a private-range type for a group name,
	// say), which every member must list to be added to such a group.
	ExtensionTypes []ExtensionType
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
	types := append([]ExtensionType(nil), o.ExtensionTypes...)
	for _, e := range o.Extensions {
		types = append(types, e.Type)
	}
	for _, t := range types {
		if !t.isDefault() && !contains(c.Extensions, t) {
			c.Extensions = append(append([]ExtensionType(nil), c.Extensions...), t)
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
// The creator's leaf is made like a KeyPackage's; it lists the types of
// the group context extensions among its capabilities.
func NewGroup(suite CipherSuite, groupID []byte, signer cipher.Signer, cred Credential, opts LeafOptions, extensions Extensions, cfg Config) (*Group, error) {
	for _, e := range extensions {
		opts.ExtensionTypes = append(opts.ExtensionTypes[:len(opts.ExtensionTypes):len(opts.ExtensionTypes)], e.Type)
	}
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

// frame builds and signs content from this member in the current epoch.
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
	if padding < 0 || padding > MaxDataSize || len(ac.Content.AuthenticatedData) > MaxDataSize {
		return nil, fmt.Errorf("mls: padding of %d or authenticated data of %d bytes out of range", padding, len(ac.Content.AuthenticatedData))
	}
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

// Encrypt protects application data as a PrivateMessage from this member,
// with padding zero bytes of padding (RFC 9420 §6.3, §15.1).
func (g *Group) Encrypt(data, authenticatedData []byte, padding int) (*MLSMessage, error) {
	if err := g.usable(); err != nil {
		return nil, err
	}
	if len(g.proposals) > 0 {
		return nil, ErrPendingProposals
	}
	if len(data) > MaxDataSize {
		return nil, fmt.Errorf("mls: application data of %d bytes exceeds %d", len(data), MaxDataSize)
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
	if err := g.usable(); err != nil {
		return nil, nil, err
	}
	ac, err := g.frame(FramedContent{ContentType: ContentTypeProposal, Proposal: p}, wf)
	if err != nil {
		return nil, nil, err
	}
	m, err := g.protect(ac, 0)
	if err != nil {
		return nil, nil, err
	}
	ref := cipher.MakeProposalRef(g.suite, codec.Marshal(ac))
	if err := g.cacheProposal(ref, ac); err != nil {
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
