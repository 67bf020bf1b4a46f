package mls

import (
	"fmt"
	"testing"

	"github.com/quicproquo/qpq/mls/cipher"
	"github.com/quicproquo/qpq/mls/codec"
	"github.com/quicproquo/qpq/mls/internal/testvec"
)

// importTree decodes and imports a serialized ratchet tree.
func importTree(t *testing.T, s cipher.Suite, data []byte) *ratchetTree {
	t.Helper()
	var rt RatchetTree
	if err := codec.Unmarshal(data, &rt); err != nil {
		t.Fatalf("decode ratchet tree: %v", err)
	}
	tree, err := importRatchetTree(s, rt)
	if err != nil {
		t.Fatalf("import ratchet tree: %v", err)
	}
	return tree
}

// TestVectorTreeValidation runs tree-validation.json.
func TestVectorTreeValidation(t *testing.T) {
	var cases []struct {
		CipherSuite uint16 `json:"cipher_suite"`
		Tree        hx
		GroupID     hx `json:"group_id"`
		Resolutions [][]NodeIndex
		TreeHashes  []hx `json:"tree_hashes"`
	}
	testvec.Load(t, "tree-validation.json", &cases)
	tally := testvec.NewTally(t, "tree-validation.json")
	for i, c := range cases {
		tally.Case(t, c.CipherSuite, fmt.Sprintf("%d/suite=0x%04x", i, c.CipherSuite), func(t *testing.T) {
			raceSample(t, c.CipherSuite, i)
			s := suiteOrSkip(t, c.CipherSuite)
			tree := importTree(t, s, c.Tree)
			if len(tree.nodes) != len(c.TreeHashes) {
				t.Fatalf("tree has %d nodes, vector %d", len(tree.nodes), len(c.TreeHashes))
			}
			for x := range tree.nodes {
				got := tree.resolution(nil, NodeIndex(x))
				if fmt.Sprint(got) != fmt.Sprint(c.Resolutions[x]) && !(len(got) == 0 && len(c.Resolutions[x]) == 0) {
					t.Fatalf("resolutions[%d] = %v, want %v", x, got, c.Resolutions[x])
				}
				eq(t, fmt.Sprintf("tree_hashes[%d]", x), tree.treeHash(NodeIndex(x)), c.TreeHashes[x])
			}
			if err := tree.verifyParentHashes(); err != nil {
				t.Fatalf("parent hashes: %v", err)
			}
			if err := tree.verifyStructure(); err != nil {
				t.Fatalf("structure: %v", err)
			}
			if err := tree.verifyLeafSignatures(c.GroupID); err != nil {
				t.Fatalf("leaf signatures: %v", err)
			}
			// Tampering with any parent hash must be caught.
			for x := 1; x < len(tree.nodes); x += 2 {
				p := tree.nodes[x].parent
				if p == nil {
					continue
				}
				bad := tree.clone()
				q := p.clone()
				q.ParentHash = append(clone(q.ParentHash), 0)
				bad.setNode(NodeIndex(x), treeNode{parent: q})
				if bad.verifyParentHashes() == nil {
					t.Fatalf("a changed parent_hash at node %d went unnoticed", x)
				}
			}
		})
	}
}

// TestVectorTreeOperations runs tree-operations.json.
func TestVectorTreeOperations(t *testing.T) {
	var cases []struct {
		CipherSuite    uint16 `json:"cipher_suite"`
		TreeBefore     hx     `json:"tree_before"`
		Proposal       hx
		ProposalSender LeafIndex `json:"proposal_sender"`
		TreeHashBefore hx        `json:"tree_hash_before"`
		TreeAfter      hx        `json:"tree_after"`
		TreeHashAfter  hx        `json:"tree_hash_after"`
	}
	testvec.Load(t, "tree-operations.json", &cases)
	tally := testvec.NewTally(t, "tree-operations.json")
	for i, c := range cases {
		tally.Case(t, c.CipherSuite, fmt.Sprintf("%d/suite=0x%04x", i, c.CipherSuite), func(t *testing.T) {
			s := suiteOrSkip(t, c.CipherSuite)
			tree := importTree(t, s, c.TreeBefore)
			eq(t, "tree_hash_before", tree.rootHash(), c.TreeHashBefore)
			r := codec.NewReader(c.Proposal)
			p := readProposal(r)
			if err := r.Finish(); err != nil {
				t.Fatalf("proposal: %v", err)
			}
			switch p := p.(type) {
			case *AddProposal:
				tree.addLeaf(&p.KeyPackage.LeafNode)
			case *UpdateProposal:
				tree.setLeaf(c.ProposalSender, &p.LeafNode)
				tree.blankPath(c.ProposalSender)
			case *RemoveProposal:
				tree.removeLeaf(p.Removed)
			default:
				t.Fatalf("unexpected proposal type %d", p.ProposalType())
			}
			eq(t, "tree_after", codec.Marshal(tree.export()), c.TreeAfter)
			eq(t, "tree_hash_after", tree.rootHash(), c.TreeHashAfter)
		})
	}
}

func TestTreeExtendTruncate(t *testing.T) {
	s := suiteOrSkip(t, 1)
	leaf := func(b byte) *LeafNode { return &LeafNode{EncryptionKey: []byte{b}, Source: LeafNodeSourceUpdate} }
	tree := newRatchetTree(s, leaf(0))
	for i := 1; i < 5; i++ {
		if got := tree.addLeaf(leaf(byte(i))); got != LeafIndex(i) {
			t.Fatalf("added at %d, want %d", got, i)
		}
	}
	if tree.numLeaves() != 8 {
		t.Fatalf("%d leaves, want 8", tree.numLeaves())
	}
	full := newRatchetTree(s, leaf(0))
	for i := 1; i < 5; i++ {
		full.addLeaf(leaf(byte(i)))
	}
	tree.removeLeaf(4)
	if tree.numLeaves() != 4 {
		t.Fatalf("after removing leaf 4: %d leaves, want 4", tree.numLeaves())
	}
	// Hashes survive extension and truncation: a fresh computation agrees.
	fresh, err := importRatchetTree(s, tree.export())
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "cached root hash", tree.rootHash(), fresh.rootHash())
	tree.removeLeaf(1)
	if got := tree.addLeaf(leaf(9)); got != 1 {
		t.Fatalf("re-added at %d, want the blank leaf 1", got)
	}
}

func TestAddLeafKeepsUnmergedSorted(t *testing.T) {
	s := suiteOrSkip(t, 1)
	leaf := func(b byte) *LeafNode { return &LeafNode{EncryptionKey: []byte{b}, Source: LeafNodeSourceUpdate} }
	tree := newRatchetTree(s, leaf(0))
	for i := 1; i < 4; i++ {
		tree.addLeaf(leaf(byte(i)))
	}
	tree.setNode(3, treeNode{parent: &ParentNode{EncryptionKey: []byte{9}, UnmergedLeaves: []LeafIndex{3}}})
	tree.setLeaf(1, nil)
	if got := tree.addLeaf(leaf(7)); got != 1 {
		t.Fatalf("added at %d, want the blank leaf 1", got)
	}
	if got := fmt.Sprint(tree.nodes[3].parent.UnmergedLeaves); got != "[1 3]" {
		t.Fatalf("unmerged leaves %s, want [1 3]", got)
	}
	if err := tree.verifyStructure(); err != nil {
		t.Fatal(err)
	}
}
