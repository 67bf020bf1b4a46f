package mls

import (
	"bytes"
	"fmt"

	"github.com/quicproquo/qpq/mls/cipher"
	"github.com/quicproquo/qpq/mls/codec"
	"github.com/quicproquo/qpq/mls/treemath"
)

// JoinWelcome joins a group from a Welcome addressed to kp (RFC 9420
// §12.4.3.1). tree is the group's ratchet tree when the Welcome's GroupInfo
// does not carry it in a ratchet_tree extension; otherwise nil. The caller
// must check that the group ID is not one of its groups already.
//
// A single-use bundle is consumed: its private keys are deleted once the
// join succeeded (delete its stored copy too); a last-resort one stays
// usable. A Welcome of a group that re-initializes or branches another
// is joined with that group's JoinSuccessor, which checks the link.
func JoinWelcome(w *Welcome, kp *KeyPackageBundle, tree RatchetTree, cfg Config) (*Group, error) {
	g, special, err := joinWelcome(w, kp, tree, cfg)
	if err != nil {
		return nil, err
	}
	if special != nil {
		return nil, fmt.Errorf("%w: welcome of a re-initialized or branched group: join it with the old group's JoinSuccessor", ErrInvalidProposal)
	}
	return g, nil
}

// joinWelcome joins from a Welcome and returns the reinit or branch PSK it
// names, if any, for the caller to check.
func joinWelcome(w *Welcome, kp *KeyPackageBundle, tree RatchetTree, cfg Config) (*Group, *PreSharedKeyID, error) {
	g, special, err := joinWelcomeKeep(w, kp, tree, cfg)
	if err != nil {
		return nil, nil, err
	}
	kp.consume()
	return g, special, nil
}

func joinWelcomeKeep(w *Welcome, kp *KeyPackageBundle, tree RatchetTree, cfg Config) (*Group, *PreSharedKeyID, error) {
	if kp.InitPriv == nil {
		return nil, nil, ErrKeyPackageUsed
	}
	s, err := cipher.Lookup(kp.KeyPackage.CipherSuite)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	if w.CipherSuite != kp.KeyPackage.CipherSuite {
		return nil, nil, fmt.Errorf("%w: welcome suite 0x%04x, key package 0x%04x", ErrNotForUs, uint16(w.CipherSuite), uint16(kp.KeyPackage.CipherSuite))
	}
	e, err := w.findSecrets(keyPackageRef(s, kp.KeyPackage))
	if err != nil {
		return nil, nil, err
	}
	gs, err := openGroupSecrets(s, kp.InitPriv, e, w.EncryptedGroupInfo)
	if err != nil {
		return nil, nil, err
	}
	defer wipe(gs.JoinerSecret)
	if len(gs.JoinerSecret) != s.Nh() {
		return nil, nil, fmt.Errorf("%w: joiner secret of %d bytes", ErrMalformed, len(gs.JoinerSecret))
	}

	g := &Group{suite: s, cfg: cfg, signer: kp.Signer}
	special := 0
	var specialID *PreSharedKeyID
	for i, id := range gs.PSKs {
		if id.Type == PSKTypeResumption && id.Usage != ResumptionPSKUsageApplication {
			special++
			specialID = &gs.PSKs[i]
		}
	}
	if special > 1 {
		return nil, nil, fmt.Errorf("%w: more than one reinit or branch PSK", ErrInvalidProposal)
	}
	psks, err := g.resolvePSKs(gs.PSKs)
	if err != nil {
		return nil, nil, err
	}
	psk := pskSecret(s, psks)
	welcome, _ := welcomeAndEpoch(s, gs.JoinerSecret, psk, nil)
	gi, err := openGroupInfo(s, welcome, w.EncryptedGroupInfo)
	wipe(welcome)
	if err != nil {
		return nil, nil, err
	}
	gc := &gi.GroupContext
	if gc.Version != MLS10 || gc.CipherSuite != kp.KeyPackage.CipherSuite {
		return nil, nil, fmt.Errorf("%w: group info version %d suite 0x%04x", ErrUnsupported, gc.Version, uint16(gc.CipherSuite))
	}
	if special > 0 && gc.Epoch != 1 {
		return nil, nil, fmt.Errorf("%w: a reinit or branch welcome must start at epoch 1", ErrInvalidProposal)
	}

	if data, ok := gi.Extensions.Find(ExtensionTypeRatchetTree); ok {
		tree = nil
		if err := decode(data, &tree, "ratchet_tree extension"); err != nil {
			return nil, nil, err
		}
	}
	if tree == nil {
		return nil, nil, fmt.Errorf("%w: no ratchet tree in the welcome or from the caller", ErrInvalidTree)
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
	g.setContext(gc.clone())
	if err := g.validateJoinedTree(t); err != nil {
		return nil, nil, err
	}
	if err := checkSupports(&kp.KeyPackage.LeafNode.Capabilities, gc.Extensions); err != nil {
		return nil, nil, fmt.Errorf("%w: this client does not support the group: %w", ErrUnsupported, err)
	}

	// Find our leaf: the one identical to the KeyPackage's.
	want := codec.Marshal(&kp.KeyPackage.LeafNode)
	me := LeafIndex(0)
	found := false
	t.members(func(l LeafIndex, n *LeafNode) {
		if !found && bytes.Equal(codec.Marshal(n), want) {
			me, found = l, true
		}
	})
	if !found {
		return nil, nil, fmt.Errorf("%w: our leaf is not in the tree", ErrInvalidTree)
	}
	priv := newPrivateTree(me, clone(kp.EncryptionPriv), clone(kp.KeyPackage.LeafNode.EncryptionKey))
	if gs.PathSecret != nil {
		if err := deriveJoinPath(s, t, priv, gi.Signer, gs.PathSecret.PathSecret); err != nil {
			return nil, nil, err
		}
	}

	_, secrets := welcomeAndEpoch(s, gs.JoinerSecret, psk, g.ctxBytes)
	wipe(psk)
	if !equalSecret(confirmationTag(s, secrets.confirmation, gc.ConfirmedTranscriptHash), gi.ConfirmationTag) {
		secrets.wipe()
		return nil, nil, ErrBadConfirmationTag
	}
	g.tree = t
	g.priv = priv
	g.secrets = secrets
	g.secretTree = newSecretTree(s, cfg.Ratchet, secrets.encryption, t.numLeaves())
	g.confirmationTag = clone(gi.ConfirmationTag)
	g.interim = interimTranscriptHash(s, gc.ConfirmedTranscriptHash, gi.ConfirmationTag)
	g.rememberResumption()
	return g, specialID, nil
}

// validateJoinedTree checks a tree received with a Welcome or GroupInfo
// against the group context (RFC 9420 §12.4.3.1).
func (g *Group) validateJoinedTree(t *ratchetTree) error {
	if !bytes.Equal(t.rootHash(), g.ctx.TreeHash) {
		return fmt.Errorf("%w: tree hash does not match the group context", ErrInvalidTree)
	}
	if err := t.verifyStructure(); err != nil {
		return err
	}
	if err := t.verifyParentHashes(); err != nil {
		return err
	}
	var err error
	t.members(func(l LeafIndex, n *LeafNode) {
		if err == nil {
			c := g.leafCheck(t, g.ctx.Extensions, n.Source, l, int64(l))
			if e := validateLeafNode(c, n); e != nil {
				err = fmt.Errorf("%w: leaf %d: %w", ErrInvalidTree, l, e)
			}
		}
	})
	return err
}

// deriveJoinPath derives the private keys of the nodes above a joiner from
// the path secret of its lowest common ancestor with the committer, and
// checks each against the tree.
func deriveJoinPath(s cipher.Suite, t *ratchetTree, priv *privateTree, committer LeafIndex, pathSecret []byte) error {
	ca := treemath.CommonAncestor(priv.leaf.Node(), committer.Node())
	secret := clone(pathSecret)
	first := true
	for _, x := range treemath.DirectPath([]NodeIndex{ca}, ca, t.numLeaves()) {
		if t.nodes[x].blank() {
			continue
		}
		if !first {
			next := deriveSecret(s, secret, "path")
			wipe(secret)
			secret = next
		}
		first = false
		k, err := deriveNodeKey(s, secret)
		if err != nil {
			return err
		}
		if !bytes.Equal(k.pub, t.nodes[x].encryptionKey()) {
			wipe(secret)
			return fmt.Errorf("%w: path secret does not match node %d", ErrInvalidTree, x)
		}
		priv.keys[x] = k
	}
	wipe(secret)
	return nil
}
