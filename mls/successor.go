package mls

import (
	"bytes"
	"crypto/rand"
	"fmt"

	"github.com/quicproquo/qpq/mls/cipher"
	"github.com/quicproquo/qpq/mls/codec"
)

// Groups that succeed another (RFC 9420 §11.2, §11.3): a re-initialized
// group (new parameters, same members) and a branch (a subgroup). Both
// start with a Commit whose resumption PSK — usage reinit or branch — links
// them to an epoch of the old group; joiners check that link.

// SuccessorOptions describe this member in a group that succeeds another.
// The zero value keeps its signer and credential.
type SuccessorOptions struct {
	// Signer and Credential of this member in the new group; nil means
	// the old group's. Re-initializing to another cipher suite needs a
	// signer of that suite.
	Signer     cipher.Signer
	Credential *Credential
	// Leaf describes this member's leaf in the new group.
	Leaf LeafOptions
	// ForcePath and RatchetTreeInWelcome shape the new group's first
	// Commit, as in CommitOptions.
	ForcePath            bool
	RatchetTreeInWelcome bool
}

// Branch creates a subgroup of g (RFC 9420 §11.3): a new group with ID
// groupID, the same version and cipher suite, the given extensions, and as
// members this one and the clients of keyPackages (which should be members
// of g). It returns the new group, already in its epoch 1, and the Welcome
// for the others, who join it with g's JoinSuccessor.
func (g *Group) Branch(groupID []byte, extensions Extensions, keyPackages []*KeyPackage, opts SuccessorOptions) (*Group, *Welcome, error) {
	if err := g.usable(); err != nil {
		return nil, nil, err
	}
	return g.successor(g.suite.ID(), groupID, extensions, ResumptionPSKUsageBranch, keyPackages, opts)
}

// Reinitialize creates the group that replaces g once a Commit applied a
// ReInit proposal (RFC 9420 §11.2): the ReInit's group ID, version, cipher
// suite and extensions, and as members this one and the clients of
// keyPackages (new KeyPackages of every other member of g). It returns
// the new group, in its epoch 1, and the Welcome for the others, who join
// it with g's JoinSuccessor.
func (g *Group) Reinitialize(keyPackages []*KeyPackage, opts SuccessorOptions) (*Group, *Welcome, error) {
	ri := g.reinit
	if ri == nil {
		return nil, nil, fmt.Errorf("%w: no ReInit was committed", ErrInvalidProposal)
	}
	if ri.Version != MLS10 {
		return nil, nil, fmt.Errorf("%w: version %d", ErrUnsupported, ri.Version)
	}
	return g.successor(ri.CipherSuite, ri.GroupID, ri.Extensions, ResumptionPSKUsageReInit, keyPackages, opts)
}

func (g *Group) successor(suite CipherSuite, groupID []byte, extensions Extensions, usage ResumptionPSKUsage,
	keyPackages []*KeyPackage, opts SuccessorOptions) (*Group, *Welcome, error) {
	s, err := cipher.Lookup(suite)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	signer, cred := opts.Signer, opts.Credential
	if signer == nil {
		if suite != g.suite.ID() {
			return nil, nil, fmt.Errorf("mls: a group of cipher suite %v needs a signer of that suite (SuccessorOptions.Signer)", suite)
		}
		signer = g.signer
	}
	if cred == nil {
		cred = &g.tree.leaf(g.priv.leaf).Credential
	}
	cfg := g.cfg
	cfg.PSKs = successorPSKs{old: g, next: g.cfg.PSKs}
	ng, err := NewGroup(suite, groupID, signer, *cred, opts.Leaf, extensions, cfg)
	if err != nil {
		return nil, nil, err
	}
	psk := &PreSharedKeyID{
		Type: PSKTypeResumption, Usage: usage, PSKGroupID: clone(g.ctx.GroupID), PSKEpoch: g.ctx.Epoch,
		PSKNonce: make([]byte, s.Nh()),
	}
	if _, err := rand.Read(psk.PSKNonce); err != nil {
		return nil, nil, err
	}
	co := CommitOptions{ForcePath: opts.ForcePath, RatchetTreeInWelcome: opts.RatchetTreeInWelcome, successorPSK: psk}
	for _, kp := range keyPackages {
		co.Proposals = append(co.Proposals, &AddProposal{KeyPackage: *kp})
	}
	pc, err := ng.Commit(co)
	if err != nil {
		return nil, nil, err
	}
	// Nobody else is in the new group to commit first.
	if _, err := ng.MergePendingCommit(); err != nil {
		return nil, nil, err
	}
	ng.cfg.PSKs = g.cfg.PSKs
	return ng, pc.Welcome, nil
}

// JoinSuccessor joins, from its Welcome, a group that re-initializes or
// branches g, and checks it against g as RFC 9420 §11.2, §11.3 and
// §12.4.3.1 ask: a re-initialized group must match the ReInit g committed
// last and keep all of g's members; a branch must keep g's version and
// cipher suite and have only members of g. Members match by credential.
// Arguments and the consumption of kp are as for JoinWelcome.
func (g *Group) JoinSuccessor(w *Welcome, kp *KeyPackageBundle, tree RatchetTree, cfg Config) (*Group, error) {
	link := cfg
	link.PSKs = successorPSKs{old: g, next: cfg.PSKs}
	ng, psk, err := joinWelcomeKeep(w, kp, tree, link)
	if err != nil {
		return nil, err
	}
	ng.cfg = cfg
	if err := g.checkSuccessor(ng, psk); err != nil {
		return nil, err
	}
	kp.consume()
	return ng, nil
}

func (g *Group) checkSuccessor(ng *Group, psk *PreSharedKeyID) error {
	if psk == nil || !bytes.Equal(psk.PSKGroupID, g.ctx.GroupID) {
		return fmt.Errorf("%w: the welcome does not name this group", ErrNotSuccessor)
	}
	has := func(in *Group, c *Credential) bool {
		found := false
		in.tree.members(func(_ LeafIndex, n *LeafNode) { found = found || n.Credential.Equal(c) })
		return found
	}
	var err error
	switch psk.Usage {
	case ResumptionPSKUsageReInit:
		ri := g.reinit
		switch {
		case ri == nil:
			return fmt.Errorf("%w: this group committed no ReInit", ErrNotSuccessor)
		case psk.PSKEpoch != g.ctx.Epoch:
			return fmt.Errorf("%w: reinit PSK of epoch %d, the ReInit ended epoch %d", ErrNotSuccessor, psk.PSKEpoch, g.ctx.Epoch)
		case !bytes.Equal(ng.ctx.GroupID, ri.GroupID) || ng.ctx.Version != ri.Version || ng.ctx.CipherSuite != ri.CipherSuite ||
			!bytes.Equal(codec.Marshal(ng.ctx.Extensions), codec.Marshal(ri.Extensions)):
			return fmt.Errorf("%w: the new group does not match the ReInit", ErrNotSuccessor)
		}
		g.tree.members(func(l LeafIndex, n *LeafNode) {
			if err == nil && !has(ng, &n.Credential) {
				err = fmt.Errorf("%w: member at leaf %d of the old group is missing", ErrNotSuccessor, l)
			}
		})
	case ResumptionPSKUsageBranch:
		if ng.ctx.Version != g.ctx.Version || ng.ctx.CipherSuite != g.ctx.CipherSuite {
			return fmt.Errorf("%w: a branch keeps version and cipher suite", ErrNotSuccessor)
		}
		ng.tree.members(func(l LeafIndex, n *LeafNode) {
			if err == nil && !has(g, &n.Credential) {
				err = fmt.Errorf("%w: member at leaf %d is not in the old group", ErrNotSuccessor, l)
			}
		})
	default:
		return fmt.Errorf("%w: PSK usage %d", ErrNotSuccessor, psk.Usage)
	}
	return err
}

// successorPSKs resolves the resumption PSKs of an old group (from the
// group itself) for the group that succeeds it, and everything else from
// next.
type successorPSKs struct {
	old  *Group
	next PSKStore
}

var _ PSKStore = successorPSKs{}

func (s successorPSKs) ExternalPSK(id []byte) ([]byte, bool) {
	if s.next == nil {
		return nil, false
	}
	return s.next.ExternalPSK(id)
}

func (s successorPSKs) ResumptionPSK(groupID []byte, epoch uint64) ([]byte, bool) {
	if bytes.Equal(groupID, s.old.ctx.GroupID) {
		return s.old.resumptionSecret(epoch)
	}
	if s.next == nil {
		return nil, false
	}
	return s.next.ResumptionPSK(groupID, epoch)
}
