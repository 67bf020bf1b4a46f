// Package treemath computes the relationships between the nodes of an MLS
// ratchet tree in its array representation (RFC 9420 Appendix C).
//
// A tree with n leaves, n a power of two, has 2n-1 nodes. Leaf i sits at
// node 2i (even indices); parent nodes have odd indices; the root of a tree
// with n leaves is node n-1. Functions that take a leaf count expect a power
// of two; they do not check it, since the ratchet tree keeps that invariant.
package treemath

import "math/bits"

// LeafIndex numbers the leaves of a tree from 0, left to right.
type LeafIndex uint32

// NodeIndex numbers all nodes of a tree in array (in-order) order.
type NodeIndex uint32

// Node returns the node index of leaf l.
func (l LeafIndex) Node() NodeIndex { return NodeIndex(2 * uint32(l)) }

// IsLeaf reports whether x is a leaf.
func (x NodeIndex) IsLeaf() bool { return x&1 == 0 }

// Leaf returns the leaf index of leaf node x.
func (x NodeIndex) Leaf() LeafIndex { return LeafIndex(x >> 1) }

// Level returns the height of x above the leaves: 0 for a leaf, 1 for its
// parent, and so on.
func Level(x NodeIndex) uint {
	return uint(bits.TrailingZeros32(^uint32(x)))
}

// NodeWidth returns the number of nodes of a tree with n leaves.
func NodeWidth(n uint32) uint32 {
	if n == 0 {
		return 0
	}
	return 2*(n-1) + 1
}

// Root returns the root of a tree with n leaves.
func Root(n uint32) NodeIndex {
	w := NodeWidth(n)
	if w == 0 {
		return 0
	}
	return NodeIndex(uint32(1)<<(bits.Len32(w)-1) - 1)
}

// Left returns the left child of parent node x.
func Left(x NodeIndex) NodeIndex {
	k := Level(x)
	return x ^ (1 << (k - 1))
}

// Right returns the right child of parent node x.
func Right(x NodeIndex) NodeIndex {
	k := Level(x)
	return x ^ (3 << (k - 1))
}

// Parent returns the parent of x, which must not be the root.
func Parent(x NodeIndex) NodeIndex {
	k := Level(x)
	b := (x >> (k + 1)) & 1
	return (x | 1<<k) ^ (b << (k + 1))
}

// Sibling returns the other child of x's parent.
func Sibling(x NodeIndex) NodeIndex {
	p := Parent(x)
	if x < p {
		return Right(p)
	}
	return Left(p)
}

// DirectPath appends to dst the direct path of x in a tree with n leaves,
// from x's parent up to the root (empty for the root).
func DirectPath(dst []NodeIndex, x NodeIndex, n uint32) []NodeIndex {
	r := Root(n)
	for x != r {
		x = Parent(x)
		dst = append(dst, x)
	}
	return dst
}

// Copath appends to dst the copath of x: the sibling of x and of each node
// on its direct path below the root.
func Copath(dst []NodeIndex, x NodeIndex, n uint32) []NodeIndex {
	r := Root(n)
	for x != r {
		dst = append(dst, Sibling(x))
		x = Parent(x)
	}
	return dst
}

// IsAncestor reports whether a is an ancestor of x (or x itself).
func IsAncestor(a, x NodeIndex) bool {
	k := Level(a)
	// The subtree of a spans [a - (2^k - 1), a + (2^k - 1)].
	span := NodeIndex(1)<<k - 1
	return x+span >= a && x <= a+span
}

// CommonAncestor returns the lowest node on the direct paths (or equal to)
// both x and y.
func CommonAncestor(x, y NodeIndex) NodeIndex {
	lx, ly := Level(x)+1, Level(y)+1
	if lx <= ly && x>>ly == y>>ly {
		return y
	}
	if ly <= lx && x>>lx == y>>lx {
		return x
	}
	xn, yn := x, y
	k := uint(0)
	for xn != yn {
		xn, yn = xn>>1, yn>>1
		k++
	}
	return xn<<k + 1<<(k-1) - 1
}

// LeafCount returns the number of leaves of a tree whose array has w nodes,
// w = 2n-1.
func LeafCount(w uint32) uint32 { return (w + 1) / 2 }
