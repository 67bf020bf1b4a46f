package mls

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/quicproquo/qpq/mls/codec"
	"github.com/quicproquo/qpq/mls/internal/testvec"
)

// TestVectorTreeKEM runs treekem.json: every member decrypts every
// UpdatePath to the vector's path secret and commit secret, the merged tree
// has the vector's hash, and every member can process an UpdatePath this
// implementation creates.
func TestVectorTreeKEM(t *testing.T) {
	var cases []struct {
		CipherSuite             uint16 `json:"cipher_suite"`
		GroupID                 hx     `json:"group_id"`
		Epoch                   uint64
		ConfirmedTranscriptHash hx `json:"confirmed_transcript_hash"`
		RatchetTree             hx `json:"ratchet_tree"`
		LeavesPrivate           []struct {
			Index          LeafIndex
			EncryptionPriv hx `json:"encryption_priv"`
			SignaturePriv  hx `json:"signature_priv"`
			PathSecrets    []struct {
				Node       NodeIndex
				PathSecret hx `json:"path_secret"`
			} `json:"path_secrets"`
		} `json:"leaves_private"`
		UpdatePaths []struct {
			Sender        LeafIndex
			UpdatePath    hx   `json:"update_path"`
			PathSecrets   []hx `json:"path_secrets"`
			CommitSecret  hx   `json:"commit_secret"`
			TreeHashAfter hx   `json:"tree_hash_after"`
		} `json:"update_paths"`
	}
	testvec.Load(t, "treekem.json", &cases)
	tally := testvec.NewTally(t, "treekem.json")
	for i, c := range cases {
		tally.Case(t, c.CipherSuite, fmt.Sprintf("%d/suite=0x%04x", i, c.CipherSuite), func(t *testing.T) {
			raceSample(t, c.CipherSuite, i)
			s := suiteOrSkip(t, c.CipherSuite)
			tree := importTree(t, s, c.RatchetTree)
			gcFor := func(treeHash []byte) []byte {
				return codec.Marshal(&GroupContext{
					Version: MLS10, CipherSuite: CipherSuite(c.CipherSuite), GroupID: c.GroupID, Epoch: c.Epoch,
					TreeHash: treeHash, ConfirmedTranscriptHash: c.ConfirmedTranscriptHash,
				})
			}
			// Private state of each member, checked against the tree.
			privs := map[LeafIndex]*privateTree{}
			signers := map[LeafIndex][]byte{}
			for _, lp := range c.LeavesPrivate {
				leaf := tree.leaf(lp.Index)
				if leaf == nil {
					t.Fatalf("leaves_private[%d]: leaf is blank", lp.Index)
				}
				p := newPrivateTree(lp.Index, lp.EncryptionPriv, leaf.EncryptionKey)
				if pub, err := s.KEMPublicKey(lp.EncryptionPriv); err != nil || !bytes.Equal(pub, leaf.EncryptionKey) {
					t.Fatalf("leaves_private[%d]: encryption_priv does not match the leaf (%v)", lp.Index, err)
				}
				for _, ps := range lp.PathSecrets {
					k, err := deriveNodeKey(s, ps.PathSecret)
					if err != nil {
						t.Fatal(err)
					}
					if n := tree.nodes[ps.Node]; n.blank() || !bytes.Equal(n.encryptionKey(), k.pub) {
						t.Fatalf("leaves_private[%d]: path secret of node %d does not match the tree", lp.Index, ps.Node)
					}
					p.keys[ps.Node] = k
				}
				privs[lp.Index] = p
				signers[lp.Index] = lp.SignaturePriv
			}
			for u, up := range c.UpdatePaths {
				f := func(name string) string { return fmt.Sprintf("update_paths[%d].%s", u, name) }
				var path UpdatePath
				if err := codec.Unmarshal(up.UpdatePath, &path); err != nil {
					t.Fatalf("%s: %v", f("update_path"), err)
				}
				merged := tree.clone()
				if err := merged.mergePath(up.Sender, &path); err != nil {
					t.Fatalf("%s: merge: %v", f("update_path"), err)
				}
				if err := verifyLeafSignature(s, &path.LeafNode, c.GroupID, up.Sender); err != nil {
					t.Fatalf("%s: %v", f("update_path.leaf_node"), err)
				}
				eq(t, f("tree_hash_after"), merged.rootHash(), up.TreeHashAfter)
				if err := merged.verifyParentHashes(); err != nil {
					t.Fatalf("%s: merged tree: %v", f("update_path"), err)
				}
				gc := gcFor(merged.rootHash())
				for j, want := range up.PathSecrets {
					l := LeafIndex(j)
					if l == up.Sender || tree.leaf(l) == nil || !sampled(j, len(up.PathSecrets)) {
						continue
					}
					p := privs[l].clone()
					commit, got, err := merged.decryptPath(p, up.Sender, &path, gc, nil)
					if err != nil {
						t.Fatalf("%s: leaf %d: %v", f("update_path"), j, err)
					}
					eq(t, fmt.Sprintf("%s[%d]", f("path_secrets"), j), got, want)
					eq(t, fmt.Sprintf("%s (leaf %d)", f("commit_secret"), j), commit, up.CommitSecret)
				}

				// Our own UpdatePath from the same sender (under the race
				// detector only for the first path of each case).
				if raceEnabled && u > 0 {
					continue
				}
				signer, err := s.NewSigner(signers[up.Sender])
				if err != nil {
					t.Fatal(err)
				}
				mine := tree.clone()
				created, err := mine.createPath(up.Sender, *tree.leaf(up.Sender), signer, c.GroupID, gcFor, nil)
				if err != nil {
					t.Fatalf("%s: create: %v", f("update_path"), err)
				}
				enc := codec.Marshal(created.path)
				var again UpdatePath
				if err := codec.Unmarshal(enc, &again); err != nil {
					t.Fatal(err)
				}
				theirs := tree.clone()
				if err := theirs.mergePath(up.Sender, &again); err != nil {
					t.Fatalf("own path: merge: %v", err)
				}
				eq(t, "own path: tree hash after merge", theirs.rootHash(), mine.rootHash())
				if err := theirs.verifyParentHashes(); err != nil {
					t.Fatalf("own path: %v", err)
				}
				gc = gcFor(mine.rootHash())
				for l, p := range privs {
					if l == up.Sender || !sampled(int(l), int(tree.numLeaves())) {
						continue
					}
					commit, _, err := theirs.decryptPath(p.clone(), up.Sender, &again, gc, nil)
					if err != nil {
						t.Fatalf("own path: leaf %d: %v", l, err)
					}
					eq(t, fmt.Sprintf("own path: commit secret at leaf %d", l), commit, created.commitSecret)
				}
			}
		})
	}
}

// sampled reports whether member i of n is checked: all of them, or under
// the race detector the first, the last and every seventh.
func sampled(i, n int) bool {
	return !raceEnabled || i == 0 || i == n-1 || i%7 == 0
}
