package mls

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"maps"
	"slices"

	"github.com/quicproquo/qpq/mls/cipher"
	"github.com/quicproquo/qpq/mls/codec"
	"github.com/quicproquo/qpq/mls/treemath"
)

// nodeKey is an HPKE key pair this client holds for a tree node.
type nodeKey struct {
	priv, pub []byte
}

// privateTree is what one member knows of the tree's private keys: its own
// leaf's and those of the nodes above it that it received in UpdatePaths
// (the tree invariant, RFC 9420 §4.2).
type privateTree struct {
	leaf LeafIndex
	keys map[NodeIndex]nodeKey
}

func newPrivateTree(leaf LeafIndex, leafPriv, leafPub []byte) *privateTree {
	return &privateTree{leaf: leaf, keys: map[NodeIndex]nodeKey{leaf.Node(): {priv: leafPriv, pub: leafPub}}}
}

func (p *privateTree) clone() *privateTree {
	c := &privateTree{leaf: p.leaf, keys: make(map[NodeIndex]nodeKey, len(p.keys))}
	for x, k := range p.keys {
		c.keys[x] = k
	}
	return c
}

// prune deletes keys whose node no longer carries the matching public key
// (blanked, replaced, or cut off by truncation), and every key that is not
// on this member's direct path.
func (p *privateTree) prune(t *ratchetTree) {
	for x, k := range p.keys {
		keep := uint32(x) < uint32(len(t.nodes)) &&
			bytes.Equal(t.nodes[x].encryptionKey(), k.pub) &&
			treemath.IsAncestor(x, p.leaf.Node())
		if !keep {
			wipe(k.priv)
			delete(p.keys, x)
		}
	}
}

// MarshalTLS implements codec.Marshaler, for persisting group state.
func (p *privateTree) MarshalTLS(b *codec.Builder) {
	b.AddUint32(uint32(p.leaf))
	codec.AddList(b, slices.Sorted(maps.Keys(p.keys)), func(b *codec.Builder, x NodeIndex) {
		b.AddUint32(uint32(x))
		b.AddOpaque(p.keys[x].priv)
		b.AddOpaque(p.keys[x].pub)
	})
}

// UnmarshalTLS implements codec.Unmarshaler.
func (p *privateTree) UnmarshalTLS(r *codec.Reader) {
	p.leaf = LeafIndex(r.Uint32())
	p.keys = map[NodeIndex]nodeKey{}
	r.Vector(MaxDataSize, func(r *codec.Reader) {
		for !r.Empty() {
			x := NodeIndex(r.Uint32())
			p.keys[x] = nodeKey{priv: r.Opaque(MaxKeySize), pub: r.Opaque(MaxKeySize)}
		}
	})
}

// deriveNodeKey derives a node's key pair from its path secret:
// DeriveKeyPair(DeriveSecret(path_secret, "node")).
func deriveNodeKey(s cipher.Suite, pathSecret []byte) (nodeKey, error) {
	secret := deriveSecret(s, pathSecret, "node")
	defer wipe(secret)
	priv, pub, err := s.DeriveKEMKey(secret)
	if err != nil {
		return nodeKey{}, err
	}
	return nodeKey{priv: priv, pub: pub}, nil
}

// createdPath is the result of generating an UpdatePath.
type createdPath struct {
	path         *UpdatePath
	commitSecret []byte
	secrets      map[NodeIndex][]byte // path secret of each node on the filtered direct path
	priv         *privateTree         // the committer's keys after the commit
}

// pathSecretFor returns the path secret of the lowest node on the
// committer's filtered direct path above leaf l, for l's Welcome.
func (c *createdPath) pathSecretFor(committer, l LeafIndex, n uint32) []byte {
	x := treemath.CommonAncestor(committer.Node(), l.Node())
	for _, y := range treemath.DirectPath([]NodeIndex{x}, x, n) {
		if s, ok := c.secrets[y]; ok {
			return s
		}
	}
	return nil
}

// createPath replaces leaf's direct path in t with fresh keys and returns
// the UpdatePath that conveys them (RFC 9420 §7.4–7.6). leafNode carries
// the committer's new leaf content (credential, capabilities, extensions,
// signature key); its encryption key, source and parent hash are set here
// and it is signed with signer. groupContext returns the encoded provisional
// GroupContext for the tree hash of the updated tree; path secrets are
// encrypted under it, to the resolution of each copath node minus the
// leaves in exclude (members added by the same Commit).
func (t *ratchetTree) createPath(leaf LeafIndex, leafNode LeafNode, signer cipher.Signer, groupID []byte,
	groupContext func(treeHash []byte) []byte, exclude []LeafIndex) (*createdPath, error) {
	s := t.suite
	leafPriv, leafPub, err := s.GenerateKEMKey()
	if err != nil {
		return nil, err
	}
	fdp := t.filteredDirectPath(leaf)
	t.blankPath(leaf)
	out := &createdPath{secrets: map[NodeIndex][]byte{}, priv: newPrivateTree(leaf, leafPriv, leafPub)}
	pathSecret := make([]byte, s.Nh())
	if _, err := rand.Read(pathSecret); err != nil {
		return nil, err
	}
	for i, step := range fdp {
		if i > 0 {
			pathSecret = deriveSecret(s, pathSecret, "path")
		}
		out.secrets[step.node] = pathSecret
		k, err := deriveNodeKey(s, pathSecret)
		if err != nil {
			return nil, err
		}
		out.priv.keys[step.node] = k
		t.setNode(step.node, treeNode{parent: &ParentNode{EncryptionKey: k.pub}})
	}
	out.commitSecret = deriveSecret(s, pathSecret, "path")
	if len(fdp) == 0 {
		wipe(pathSecret)
	}

	leafNode.EncryptionKey = leafPub
	leafNode.Source = LeafNodeSourceCommit
	leafNode.Lifetime = Lifetime{}
	leafNode.ParentHash = t.setPathParentHashes(fdp)
	if err := signLeaf(signer, &leafNode, groupID, leaf); err != nil {
		return nil, err
	}
	t.setLeaf(leaf, &leafNode)

	gc := groupContext(t.rootHash())
	out.path = &UpdatePath{LeafNode: leafNode, Nodes: make([]UpdatePathNode, len(fdp))}
	for i, step := range fdp {
		n := &out.path.Nodes[i]
		n.EncryptionKey = t.nodes[step.node].parent.EncryptionKey
		for _, r := range t.resolution(nil, step.copath) {
			if r.IsLeaf() && contains(exclude, r.Leaf()) {
				continue
			}
			kem, ct, err := cipher.EncryptWithLabel(s, t.nodes[r].encryptionKey(), labelUpdatePathNode, gc, out.secrets[step.node])
			if err != nil {
				return nil, err
			}
			n.EncryptedPathSecret = append(n.EncryptedPathSecret, HPKECiphertext{KEMOutput: kem, Ciphertext: ct})
		}
	}
	return out, nil
}

// mergePath applies a received UpdatePath from sender to t (RFC 9420
// §7.5): checks its shape and that its keys are new to the tree, sets the
// nodes of the filtered direct path, and checks the leaf's parent hash.
// The caller validates the LeafNode itself.
func (t *ratchetTree) mergePath(sender LeafIndex, path *UpdatePath) error {
	fdp := t.filteredDirectPath(sender)
	if len(path.Nodes) != len(fdp) {
		return fmt.Errorf("%w: update path has %d nodes, the filtered direct path %d", ErrInvalidCommit, len(path.Nodes), len(fdp))
	}
	keys := map[string]bool{string(path.LeafNode.EncryptionKey): true}
	for _, n := range path.Nodes {
		if keys[string(n.EncryptionKey)] {
			return fmt.Errorf("%w: update path repeats an encryption key", ErrInvalidCommit)
		}
		keys[string(n.EncryptionKey)] = true
	}
	for i, n := range t.nodes {
		// The sender's own leaf is being replaced (or, for an external
		// joiner, was just placed there with this very key).
		if NodeIndex(i) == sender.Node() {
			continue
		}
		if k := n.encryptionKey(); k != nil && keys[string(k)] {
			return fmt.Errorf("%w: update path reuses an encryption key of the tree", ErrInvalidCommit)
		}
	}
	t.blankPath(sender)
	for i, step := range fdp {
		t.setNode(step.node, treeNode{parent: &ParentNode{EncryptionKey: path.Nodes[i].EncryptionKey}})
	}
	if ph := t.setPathParentHashes(fdp); !bytes.Equal(ph, path.LeafNode.ParentHash) {
		return fmt.Errorf("%w: committer's leaf has a wrong parent hash", ErrInvalidCommit)
	}
	leaf := path.LeafNode
	t.setLeaf(sender, &leaf)
	return nil
}

// decryptPath recovers the path secrets of a merged UpdatePath that this
// member is entitled to (RFC 9420 §7.5): it decrypts the secret of the
// lowest path node above it, derives the rest, checks them against the
// path's public keys and stores the new private keys in priv. It returns
// the commit secret and the decrypted path secret.
func (t *ratchetTree) decryptPath(priv *privateTree, sender LeafIndex, path *UpdatePath, groupContext []byte, exclude []LeafIndex) (commitSecret, decrypted []byte, err error) {
	s := t.suite
	fdp := t.filteredDirectPath(sender)
	me := priv.leaf.Node()
	start := -1
	for i, step := range fdp {
		if treemath.IsAncestor(step.copath, me) {
			start = i
			break
		}
	}
	if start < 0 {
		return nil, nil, fmt.Errorf("%w: no update path node above this member", ErrInvalidCommit)
	}
	var res []NodeIndex
	for _, r := range t.resolution(nil, fdp[start].copath) {
		if !(r.IsLeaf() && contains(exclude, r.Leaf())) {
			res = append(res, r)
		}
	}
	cts := path.Nodes[start].EncryptedPathSecret
	if len(cts) != len(res) {
		return nil, nil, fmt.Errorf("%w: %d encrypted path secrets for a resolution of %d", ErrInvalidCommit, len(cts), len(res))
	}
	var pathSecret []byte
	for j, r := range res {
		k, ok := priv.keys[r]
		if !ok || !bytes.Equal(k.pub, t.nodes[r].encryptionKey()) {
			continue
		}
		pathSecret, err = cipher.DecryptWithLabel(s, k.priv, labelUpdatePathNode, groupContext, cts[j].KEMOutput, cts[j].Ciphertext)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: path secret: %v", ErrDecrypt, err)
		}
		break
	}
	if pathSecret == nil {
		return nil, nil, fmt.Errorf("%w: no private key for the resolution of the copath", ErrInvalidCommit)
	}
	decrypted = clone(pathSecret)
	for i := start; i < len(fdp); i++ {
		if i > start {
			next := deriveSecret(s, pathSecret, "path")
			wipe(pathSecret)
			pathSecret = next
		}
		k, err := deriveNodeKey(s, pathSecret)
		if err != nil {
			return nil, nil, err
		}
		if !bytes.Equal(k.pub, path.Nodes[i].EncryptionKey) {
			return nil, nil, fmt.Errorf("%w: path secret does not match the public key of node %d", ErrInvalidCommit, fdp[i].node)
		}
		priv.keys[fdp[i].node] = k
	}
	commitSecret = deriveSecret(s, pathSecret, "path")
	wipe(pathSecret)
	return commitSecret, decrypted, nil
}
