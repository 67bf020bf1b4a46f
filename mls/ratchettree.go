package mls

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/quicproquo/qpq/mls/cipher"
	"github.com/quicproquo/qpq/mls/codec"
	"github.com/quicproquo/qpq/mls/treemath"
)

// NodeIndex is a node's position in the array form of the ratchet tree.
type NodeIndex = treemath.NodeIndex

// treeNode is one node of the ratchet tree: blank, a leaf or a parent. The
// LeafNode and ParentNode it points to are never modified once in a tree;
// a change replaces the pointer, so trees can share nodes (clone is cheap).
type treeNode struct {
	leaf   *LeafNode
	parent *ParentNode
}

func (n treeNode) blank() bool { return n.leaf == nil && n.parent == nil }

// encryptionKey returns the node's HPKE public key (nil when blank).
func (n treeNode) encryptionKey() []byte {
	switch {
	case n.leaf != nil:
		return n.leaf.EncryptionKey
	case n.parent != nil:
		return n.parent.EncryptionKey
	}
	return nil
}

// ratchetTree is the public ratchet tree of a group (RFC 9420 §4, §7) in
// array form, always with a power-of-two number of leaves. It caches the
// tree hash of every node and recomputes only the nodes above a change,
// so an operation on a large group costs O(log n) hashes.
type ratchetTree struct {
	suite  cipher.Suite
	nodes  []treeNode
	hashes [][]byte // tree hash per node; nil when stale
}

// newRatchetTree returns a tree with one leaf.
func newRatchetTree(s cipher.Suite, leaf *LeafNode) *ratchetTree {
	return &ratchetTree{suite: s, nodes: []treeNode{{leaf: leaf}}, hashes: make([][]byte, 1)}
}

// importRatchetTree builds a tree from its ratchet_tree extension form,
// padding it with blank nodes to a full tree. It checks structure only;
// see validate.
func importRatchetTree(s cipher.Suite, rt RatchetTree) (*ratchetTree, error) {
	if len(rt) == 0 || rt[len(rt)-1] == nil {
		return nil, fmt.Errorf("%w: empty tree or trailing blank node", ErrInvalidTree)
	}
	width := 1
	for width < len(rt) {
		width = 2*width + 1
	}
	if width > maxNodes {
		return nil, fmt.Errorf("%w: %d nodes", ErrInvalidTree, len(rt))
	}
	t := &ratchetTree{suite: s, nodes: make([]treeNode, width), hashes: make([][]byte, width)}
	for i, n := range rt {
		if n == nil {
			continue
		}
		if (n.Leaf != nil) != (i%2 == 0) || (n.Leaf == nil) == (n.Parent == nil) {
			return nil, fmt.Errorf("%w: node %d has the wrong type", ErrInvalidTree, i)
		}
		t.nodes[i] = treeNode{leaf: n.Leaf, parent: n.Parent}
	}
	return t, nil
}

// export returns the ratchet_tree extension form, without trailing blanks.
func (t *ratchetTree) export() RatchetTree {
	end := len(t.nodes)
	for end > 0 && t.nodes[end-1].blank() {
		end--
	}
	rt := make(RatchetTree, end)
	for i := range end {
		n := t.nodes[i]
		if !n.blank() {
			rt[i] = &Node{Leaf: n.leaf, Parent: n.parent}
		}
	}
	return rt
}

// clone returns a copy that shares the (immutable) nodes.
func (t *ratchetTree) clone() *ratchetTree {
	return &ratchetTree{
		suite:  t.suite,
		nodes:  append([]treeNode(nil), t.nodes...),
		hashes: append([][]byte(nil), t.hashes...),
	}
}

func (t *ratchetTree) numLeaves() uint32 { return treemath.LeafCount(uint32(len(t.nodes))) }

func (t *ratchetTree) root() NodeIndex { return treemath.Root(t.numLeaves()) }

// leaf returns the LeafNode at l, or nil when blank or outside the tree.
func (t *ratchetTree) leaf(l LeafIndex) *LeafNode {
	if uint32(l) >= t.numLeaves() {
		return nil
	}
	return t.nodes[l.Node()].leaf
}

// invalidate marks the hashes of x and its ancestors stale.
func (t *ratchetTree) invalidate(x NodeIndex) {
	r := t.root()
	for {
		t.hashes[x] = nil
		if x == r {
			return
		}
		x = treemath.Parent(x)
	}
}

func (t *ratchetTree) setNode(x NodeIndex, n treeNode) {
	t.nodes[x] = n
	t.invalidate(x)
}

// setLeaf replaces the leaf at l (nil blanks it).
func (t *ratchetTree) setLeaf(l LeafIndex, n *LeafNode) { t.setNode(l.Node(), treeNode{leaf: n}) }

// directPath returns the direct path of leaf l.
func (t *ratchetTree) directPath(l LeafIndex) []NodeIndex {
	return treemath.DirectPath(nil, l.Node(), t.numLeaves())
}

// blankPath blanks the parent nodes on the direct path of l.
func (t *ratchetTree) blankPath(l LeafIndex) {
	for _, x := range t.directPath(l) {
		t.nodes[x] = treeNode{}
	}
	t.invalidate(l.Node())
}

// members calls f for each non-blank leaf.
func (t *ratchetTree) members(f func(l LeafIndex, n *LeafNode)) {
	for i := 0; i < len(t.nodes); i += 2 {
		if n := t.nodes[i].leaf; n != nil {
			f(NodeIndex(i).Leaf(), n)
		}
	}
}

// signatureKeys returns the signature key of each leaf (nil when blank).
func (t *ratchetTree) signatureKeys() [][]byte {
	out := make([][]byte, t.numLeaves())
	t.members(func(l LeafIndex, n *LeafNode) { out[l] = n.SignatureKey })
	return out
}

// addLeaf puts n in the leftmost blank leaf, extending the tree when there
// is none, and records it as unmerged at every non-blank parent above it
// (RFC 9420 §12.1.1).
func (t *ratchetTree) addLeaf(n *LeafNode) LeafIndex {
	l := LeafIndex(0)
	for ; uint32(l) < t.numLeaves(); l++ {
		if t.nodes[l.Node()].blank() {
			break
		}
	}
	if uint32(l) == t.numLeaves() {
		t.extend()
	}
	for _, x := range t.directPath(l) {
		if p := t.nodes[x].parent; p != nil {
			// unmerged_leaves stays sorted (RFC 9420 §7.1): a leaf filling
			// a hole may be left of leaves added earlier.
			c := p.clone()
			i, _ := slices.BinarySearch(c.UnmergedLeaves, l)
			c.UnmergedLeaves = slices.Insert(c.UnmergedLeaves, i, l)
			t.nodes[x] = treeNode{parent: c}
		}
	}
	t.setLeaf(l, n)
	return l
}

// extend doubles the number of leaves, adding a blank root and a blank
// right subtree.
func (t *ratchetTree) extend() {
	w := len(t.nodes)
	t.nodes = append(t.nodes, make([]treeNode, w+1)...)
	t.hashes = append(t.hashes, make([][]byte, w+1)...)
}

// truncate halves the tree while its right half is entirely blank
// (RFC 9420 §7.7), keeping at least one leaf.
func (t *ratchetTree) truncate() {
	for len(t.nodes) > 1 {
		half := (len(t.nodes) - 1) / 2
		for _, n := range t.nodes[half+1:] {
			if !n.blank() {
				return
			}
		}
		t.nodes = t.nodes[:half]
		t.hashes = t.hashes[:half]
	}
}

// removeLeaf blanks leaf l and its direct path, then truncates.
func (t *ratchetTree) removeLeaf(l LeafIndex) {
	t.blankPath(l)
	t.setLeaf(l, nil)
	t.truncate()
}

// resolution appends to dst the resolution of x (RFC 9420 §4.1.1).
func (t *ratchetTree) resolution(dst []NodeIndex, x NodeIndex) []NodeIndex {
	n := t.nodes[x]
	switch {
	case n.leaf != nil:
		return append(dst, x)
	case n.parent != nil:
		dst = append(dst, x)
		for _, l := range n.parent.UnmergedLeaves {
			dst = append(dst, l.Node())
		}
		return dst
	case x.IsLeaf():
		return dst
	}
	dst = t.resolution(dst, treemath.Left(x))
	return t.resolution(dst, treemath.Right(x))
}

// emptyResolution reports whether x's subtree has no non-blank node.
func (t *ratchetTree) emptyResolution(x NodeIndex) bool {
	if !t.nodes[x].blank() {
		return false
	}
	if x.IsLeaf() {
		return true
	}
	return t.emptyResolution(treemath.Left(x)) && t.emptyResolution(treemath.Right(x))
}

// pathStep is one node of a filtered direct path and the child of it on
// the copath.
type pathStep struct {
	node, copath NodeIndex
}

// filteredDirectPath returns the filtered direct path of leaf l: its direct
// path without the nodes whose copath child has an empty resolution.
func (t *ratchetTree) filteredDirectPath(l LeafIndex) []pathStep {
	n := t.numLeaves()
	var out []pathStep
	x := l.Node()
	for r := treemath.Root(n); x != r; {
		s := treemath.Sibling(x)
		x = treemath.Parent(x)
		if !t.emptyResolution(s) {
			out = append(out, pathStep{node: x, copath: s})
		}
	}
	return out
}

// treeHash returns the tree hash of node x (RFC 9420 §7.8), from the cache
// when it is current.
func (t *ratchetTree) treeHash(x NodeIndex) []byte {
	if h := t.hashes[x]; h != nil {
		return h
	}
	var h []byte
	if x.IsLeaf() {
		h = t.suite.Hash(leafHashInput(x.Leaf(), t.nodes[x].leaf))
	} else {
		left := t.treeHash(treemath.Left(x))
		right := t.treeHash(treemath.Right(x))
		h = t.suite.Hash(parentHashInputForTree(t.nodes[x].parent, left, right))
	}
	t.hashes[x] = h
	return h
}

// rootHash returns the tree hash of the whole tree.
func (t *ratchetTree) rootHash() []byte { return t.treeHash(t.root()) }

func leafHashInput(l LeafIndex, n *LeafNode) []byte {
	var b codec.Builder
	b.AddUint8(uint8(NodeTypeLeaf))
	b.AddUint32(uint32(l))
	b.AddOptional(n != nil, func(b *codec.Builder) { n.MarshalTLS(b) })
	return b.Bytes()
}

func parentHashInputForTree(p *ParentNode, left, right []byte) []byte {
	var b codec.Builder
	b.AddUint8(uint8(NodeTypeParent))
	b.AddOptional(p != nil, func(b *codec.Builder) { p.MarshalTLS(b) })
	b.AddOpaque(left)
	b.AddOpaque(right)
	return b.Bytes()
}

// treeHashExcluding is the tree hash of x in a copy of the tree where the
// leaves in excl (sorted) are blank and dropped from every unmerged_leaves
// list: the "original sibling tree hash" of RFC 9420 §7.9. Subtrees without
// excluded leaves use the cached hash, so the cost grows with the excluded
// leaves, not with the subtree.
func (t *ratchetTree) treeHashExcluding(x NodeIndex, excl []LeafIndex) []byte {
	if !anyUnder(excl, x) {
		return t.treeHash(x)
	}
	if x.IsLeaf() {
		return t.suite.Hash(leafHashInput(x.Leaf(), nil))
	}
	left := t.treeHashExcluding(treemath.Left(x), excl)
	right := t.treeHashExcluding(treemath.Right(x), excl)
	p := t.nodes[x].parent
	if p != nil {
		c := *p
		c.UnmergedLeaves = nil
		for _, u := range p.UnmergedLeaves {
			if _, found := slices.BinarySearch(excl, u); !found {
				c.UnmergedLeaves = append(c.UnmergedLeaves, u)
			}
		}
		p = &c
	}
	return t.suite.Hash(parentHashInputForTree(p, left, right))
}

// anyUnder reports whether a leaf of sorted lies in the subtree of x.
func anyUnder(sorted []LeafIndex, x NodeIndex) bool {
	span := NodeIndex(1)<<treemath.Level(x) - 1
	lo, hi := (x - span).Leaf(), (x + span).Leaf()
	i, _ := slices.BinarySearch(sorted, lo)
	return i < len(sorted) && sorted[i] <= hi
}

// parentHash is the hash of ParentHashInput for a parent whose key and own
// parent_hash are given, with copath child sibling.
func parentHash(s cipher.Suite, encryptionKey, parentHashAbove, originalSiblingTreeHash []byte) []byte {
	var b codec.Builder
	b.AddOpaque(encryptionKey)
	b.AddOpaque(parentHashAbove)
	b.AddOpaque(originalSiblingTreeHash)
	return s.Hash(b.Bytes())
}

// setPathParentHashes fills in the parent_hash of each node of the filtered
// direct path path (from the leaf up), which must already carry its new
// public key and no unmerged leaves, and returns the parent hash the leaf
// must carry (RFC 9420 §7.9). Hashes run from the root down, since each
// one covers the nodes above it.
func (t *ratchetTree) setPathParentHashes(path []pathStep) []byte {
	var above []byte
	for i := len(path) - 1; i >= 0; i-- {
		x := path[i].node
		p := t.nodes[x].parent
		c := *p
		c.ParentHash = above
		t.setNode(x, treeNode{parent: &c})
		above = parentHash(t.suite, c.EncryptionKey, c.ParentHash, t.treeHash(path[i].copath))
	}
	return above
}

// nodeParentHash returns the parent_hash field of the node at x (nil for
// a blank node or a leaf of another source).
func (t *ratchetTree) nodeParentHash(x NodeIndex) []byte {
	n := t.nodes[x]
	switch {
	case n.parent != nil:
		return n.parent.ParentHash
	case n.leaf != nil && n.leaf.Source == LeafNodeSourceCommit:
		return n.leaf.ParentHash
	}
	return nil
}

func sortedContains(sorted []LeafIndex, l LeafIndex) bool {
	_, found := slices.BinarySearch(sorted, l)
	return found
}

// verifyParentHashes checks that every non-blank parent node is
// parent-hash valid: exactly one node below it links to it by parent hash
// (RFC 9420 §7.9.2, checked top-down). It expects sorted unmerged leaves
// (verifyStructure checks that).
func (t *ratchetTree) verifyParentHashes() error {
	for i := 1; i < len(t.nodes); i += 2 {
		x := NodeIndex(i)
		p := t.nodes[x].parent
		if p == nil {
			continue
		}
		links := 0
		for _, side := range [2][2]NodeIndex{{treemath.Left(x), treemath.Right(x)}, {treemath.Right(x), treemath.Left(x)}} {
			c, s := side[0], side[1]
			ph := parentHash(t.suite, p.EncryptionKey, p.ParentHash, t.treeHashExcluding(s, p.UnmergedLeaves))
			res := t.resolution(nil, c)
			for _, d := range res {
				if !bytes.Equal(t.nodeParentHash(d), ph) {
					continue
				}
				if t.unmergedMatch(p, c, res, d) {
					links++
				}
			}
		}
		if links != 1 {
			return fmt.Errorf("%w: parent node %d is linked by %d parent hashes, want 1", ErrInvalidTree, x, links)
		}
	}
	return nil
}

// unmergedMatch checks that P's unmerged leaves under c are exactly the
// resolution of c without d.
func (t *ratchetTree) unmergedMatch(p *ParentNode, c NodeIndex, res []NodeIndex, d NodeIndex) bool {
	under := 0
	for _, u := range p.UnmergedLeaves {
		if treemath.IsAncestor(c, u.Node()) {
			under++
		}
	}
	if under != len(res)-1 {
		return false
	}
	for _, r := range res {
		if r == d {
			continue
		}
		if !r.IsLeaf() {
			return false
		}
		if _, found := slices.BinarySearch(p.UnmergedLeaves, r.Leaf()); !found {
			return false
		}
	}
	return true
}

// verifyStructure checks what a joiner must check beyond parent hashes
// (RFC 9420 §12.4.3.1): unmerged leaves are sorted, name non-blank leaves
// below their node and appear at every non-blank node between, and no
// HPKE key appears twice.
func (t *ratchetTree) verifyStructure() error {
	keys := make(map[string]NodeIndex, len(t.nodes))
	for i, n := range t.nodes {
		x := NodeIndex(i)
		if k := n.encryptionKey(); k != nil {
			if prev, dup := keys[string(k)]; dup {
				return fmt.Errorf("%w: nodes %d and %d share an encryption key", ErrInvalidTree, prev, x)
			}
			keys[string(k)] = x
		}
		if n.parent == nil {
			continue
		}
		for j, u := range n.parent.UnmergedLeaves {
			if j > 0 && u <= n.parent.UnmergedLeaves[j-1] {
				return fmt.Errorf("%w: unmerged leaves of node %d are not sorted", ErrInvalidTree, x)
			}
			if uint32(u) >= t.numLeaves() || t.nodes[u.Node()].leaf == nil || !treemath.IsAncestor(x, u.Node()) {
				return fmt.Errorf("%w: node %d lists leaf %d as unmerged, which is blank or not below it", ErrInvalidTree, x, u)
			}
			for y := treemath.Parent(u.Node()); y != x; y = treemath.Parent(y) {
				if q := t.nodes[y].parent; q != nil && !sortedContains(q.UnmergedLeaves, u) {
					return fmt.Errorf("%w: leaf %d is unmerged at node %d but not at node %d below it", ErrInvalidTree, u, x, y)
				}
			}
		}
	}
	return nil
}
