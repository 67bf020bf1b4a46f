package mls

import (
	"github.com/quicproquo/qpq/mls/codec"
	"github.com/quicproquo/qpq/mls/treemath"
)

// LeafIndex is a member's position in the ratchet tree.
type LeafIndex = treemath.LeafIndex

// LeafNodeSource says how a LeafNode entered the tree.
type LeafNodeSource uint8

// Leaf node sources.
const (
	LeafNodeSourceKeyPackage LeafNodeSource = 1
	LeafNodeSourceUpdate     LeafNodeSource = 2
	LeafNodeSourceCommit     LeafNodeSource = 3
)

// LeafNode describes one member (RFC 9420 §7.2).
type LeafNode struct {
	EncryptionKey []byte
	SignatureKey  []byte
	Credential    Credential
	Capabilities  Capabilities
	Source        LeafNodeSource
	Lifetime      Lifetime // when Source is LeafNodeSourceKeyPackage
	ParentHash    []byte   // when Source is LeafNodeSourceCommit
	Extensions    Extensions
	Signature     []byte
}

// marshalContent writes the fields that LeafNode and LeafNodeTBS share.
func (n *LeafNode) marshalContent(b *codec.Builder) {
	b.AddOpaque(n.EncryptionKey)
	b.AddOpaque(n.SignatureKey)
	n.Credential.MarshalTLS(b)
	n.Capabilities.MarshalTLS(b)
	b.AddUint8(uint8(n.Source))
	switch n.Source {
	case LeafNodeSourceKeyPackage:
		b.AddUint64(n.Lifetime.NotBefore)
		b.AddUint64(n.Lifetime.NotAfter)
	case LeafNodeSourceCommit:
		b.AddOpaque(n.ParentHash)
	}
	n.Extensions.MarshalTLS(b)
}

// MarshalTLS implements codec.Marshaler.
func (n *LeafNode) MarshalTLS(b *codec.Builder) {
	n.marshalContent(b)
	b.AddOpaque(n.Signature)
}

// UnmarshalTLS implements codec.Unmarshaler.
func (n *LeafNode) UnmarshalTLS(r *codec.Reader) {
	n.EncryptionKey = r.Opaque(MaxKeySize)
	n.SignatureKey = r.Opaque(MaxKeySize)
	n.Credential.UnmarshalTLS(r)
	n.Capabilities.UnmarshalTLS(r)
	n.Source = LeafNodeSource(r.Uint8())
	switch n.Source {
	case LeafNodeSourceKeyPackage:
		n.Lifetime.NotBefore = r.Uint64()
		n.Lifetime.NotAfter = r.Uint64()
	case LeafNodeSourceUpdate:
	case LeafNodeSourceCommit:
		n.ParentHash = r.Opaque(MaxKeySize)
	default:
		r.Failf("leaf node source %d", n.Source)
		return
	}
	n.Extensions = readExtensions(r, MaxListSize)
	n.Signature = r.Opaque(MaxKeySize)
}

// tbs returns LeafNodeTBS: the signed content, bound to the group and leaf
// for the update and commit sources.
func (n *LeafNode) tbs(groupID []byte, leaf LeafIndex) []byte {
	var b codec.Builder
	n.marshalContent(&b)
	if n.Source == LeafNodeSourceUpdate || n.Source == LeafNodeSourceCommit {
		b.AddOpaque(groupID)
		b.AddUint32(uint32(leaf))
	}
	return b.Bytes()
}

// ParentNode is a parent node of the ratchet tree (RFC 9420 §7.1).
type ParentNode struct {
	EncryptionKey  []byte
	ParentHash     []byte
	UnmergedLeaves []LeafIndex
}

// MarshalTLS implements codec.Marshaler.
func (p *ParentNode) MarshalTLS(b *codec.Builder) {
	b.AddOpaque(p.EncryptionKey)
	b.AddOpaque(p.ParentHash)
	codec.AddList(b, p.UnmergedLeaves, func(b *codec.Builder, l LeafIndex) { b.AddUint32(uint32(l)) })
}

// UnmarshalTLS implements codec.Unmarshaler.
func (p *ParentNode) UnmarshalTLS(r *codec.Reader) {
	p.EncryptionKey = r.Opaque(MaxKeySize)
	p.ParentHash = r.Opaque(MaxKeySize)
	p.UnmergedLeaves = codec.ReadList(r, 4*MaxLeaves, MaxLeaves, func(r *codec.Reader) LeafIndex { return LeafIndex(r.Uint32()) })
}

func (p *ParentNode) clone() *ParentNode {
	c := *p
	c.UnmergedLeaves = append([]LeafIndex(nil), p.UnmergedLeaves...)
	return &c
}

// NodeType tags a Node as leaf or parent.
type NodeType uint8

// Node types.
const (
	NodeTypeLeaf   NodeType = 1
	NodeTypeParent NodeType = 2
)

// Node is one non-blank entry of a ratchet tree: exactly one of Leaf and
// Parent is set.
type Node struct {
	Leaf   *LeafNode
	Parent *ParentNode
}

// MarshalTLS implements codec.Marshaler.
func (n *Node) MarshalTLS(b *codec.Builder) {
	if n.Leaf != nil {
		b.AddUint8(uint8(NodeTypeLeaf))
		n.Leaf.MarshalTLS(b)
		return
	}
	b.AddUint8(uint8(NodeTypeParent))
	n.Parent.MarshalTLS(b)
}

// UnmarshalTLS implements codec.Unmarshaler.
func (n *Node) UnmarshalTLS(r *codec.Reader) {
	switch t := NodeType(r.Uint8()); t {
	case NodeTypeLeaf:
		n.Leaf = new(LeafNode)
		n.Leaf.UnmarshalTLS(r)
	case NodeTypeParent:
		n.Parent = new(ParentNode)
		n.Parent.UnmarshalTLS(r)
	default:
		r.Failf("node type %d", t)
	}
}

// RatchetTree is the array form of a ratchet tree as the ratchet_tree
// extension carries it (optional<Node> ratchet_tree<V>): nil entries are
// blank nodes, and the last entry is not blank.
type RatchetTree []*Node

// MarshalTLS implements codec.Marshaler.
func (t RatchetTree) MarshalTLS(b *codec.Builder) {
	codec.AddList(b, t, func(b *codec.Builder, n *Node) {
		b.AddOptional(n != nil, func(b *codec.Builder) { n.MarshalTLS(b) })
	})
}

// UnmarshalTLS implements codec.Unmarshaler. It checks only the syntax:
// at most maxNodes entries, the last one not blank, leaves at even and
// parents at odd positions.
func (t *RatchetTree) UnmarshalTLS(r *codec.Reader) {
	nodes := codec.ReadList(r, MaxDataSize, maxNodes, func(r *codec.Reader) *Node {
		if !r.Optional() {
			return nil
		}
		n := new(Node)
		n.UnmarshalTLS(r)
		return n
	})
	if r.Err() != nil {
		return
	}
	if len(nodes) == 0 || nodes[len(nodes)-1] == nil {
		r.Failf("ratchet tree is empty or ends in a blank node")
		return
	}
	for i, n := range nodes {
		if n != nil && (n.Leaf != nil) != (i%2 == 0) {
			r.Failf("ratchet tree node %d has the wrong type", i)
			return
		}
	}
	*t = nodes
}
