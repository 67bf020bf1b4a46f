package mls

import (
	"crypto/ed25519"
	"fmt"
	"sync"
	"testing"
	"time"
)

// Benchmarks of the operations a messenger does all the time, for groups
// of 2 to 1024 members, in suite 0x0001 (scripts/bench-mls prints them as
// the table of docs/PERFORMANCE.md):
//
//	BenchmarkAddCommit        create an add-commit (one KeyPackage by value,
//	                          ratchet tree in the Welcome) / process it
//	BenchmarkUpdateCommit     create a commit with a path (self-update) /
//	                          process it
//	BenchmarkUpdateCommitFilledTree
//	                          the same in a tree whose parent nodes are all
//	                          set
//	BenchmarkApplicationMessage
//	                          encrypt a 1 KiB message and decrypt it at
//	                          another member, next to the floor of its
//	                          Ed25519 signature and verification
//
// The group is built as a messenger builds one: the creator adds everyone
// in one Commit; only the creator and one member (bob) have committed with
// a path since. The parent nodes of the rest of the tree are blank, so a
// path is encrypted to every other member (the resolution of a blank
// subtree is all its leaves): the worst case for a Commit with a path,
// which BenchmarkUpdateCommitFilledTree sets against the best.

var benchSizes = []int{2, 16, 128, 1024}

type benchGroup struct {
	alice, bob *client
	bobState   []byte // bob's state, to process the same Commit again
}

var benchGroups struct {
	sync.Mutex
	m map[int]*benchGroup
}

// groupOfSize returns a group of n members (built once per size).
func groupOfSize(b *testing.B, n int) *benchGroup {
	benchGroups.Lock()
	defer benchGroups.Unlock()
	if g := benchGroups.m[n]; g != nil {
		return g
	}
	alice, bob := newClient(b, testSuite, "alice"), newClient(b, testSuite, "bob")
	var err error
	alice.g, err = NewGroup(testSuite, randomID(b), alice.signer, alice.cred, LeafOptions{}, nil, Config{})
	if err != nil {
		b.Fatal(err)
	}
	bobKP := bob.keyPackage(b, testSuite)
	props := []Proposal{&AddProposal{KeyPackage: *bobKP.KeyPackage}}
	for i := 2; i < n; i++ {
		c := newClient(b, testSuite, fmt.Sprint("m", i))
		props = append(props, &AddProposal{KeyPackage: *c.keyPackage(b, testSuite).KeyPackage})
	}
	commitAndDeliver(b, alice, CommitOptions{Proposals: props, RatchetTreeInWelcome: true}, nil, map[*client]*KeyPackageBundle{bob: bobKP}, Config{})
	commitAndDeliver(b, alice, CommitOptions{ForcePath: true}, []*client{bob}, nil, Config{})
	commitAndDeliver(b, bob, CommitOptions{ForcePath: true}, []*client{alice}, nil, Config{})
	g := &benchGroup{alice: alice, bob: bob, bobState: bob.g.MarshalState()}
	if benchGroups.m == nil {
		benchGroups.m = map[int]*benchGroup{}
	}
	benchGroups.m[n] = g
	return g
}

// benchCommit measures creating a Commit with opts at alice and processing
// it at bob, in groups made by group.
func benchCommit(b *testing.B, group func(b *testing.B, n int) *benchGroup, opts CommitOptions) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint("members=", n), func(b *testing.B) {
			g := group(b, n)
			b.Run("create", func(b *testing.B) {
				for b.Loop() {
					if _, err := g.alice.g.Commit(opts); err != nil {
						b.Fatal(err)
					}
					g.alice.g.DiscardPendingCommit()
				}
			})
			pc, err := g.alice.g.Commit(opts)
			if err != nil {
				b.Fatal(err)
			}
			g.alice.g.DiscardPendingCommit()
			b.Run("process", func(b *testing.B) {
				for b.Loop() {
					b.StopTimer()
					bob, err := UnmarshalState(g.bobState, Config{})
					if err != nil {
						b.Fatal(err)
					}
					bob.tree.rootHash() // a live group has its tree hashes cached
					b.StartTimer()
					if _, err := bob.Process(pc.Message); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

func BenchmarkAddCommit(b *testing.B) {
	newcomer := newClient(b, testSuite, "new")
	kp := newcomer.keyPackage(b, testSuite)
	benchCommit(b, groupOfSize, CommitOptions{Proposals: []Proposal{&AddProposal{KeyPackage: *kp.KeyPackage}}, RatchetTreeInWelcome: true})
}

func BenchmarkUpdateCommit(b *testing.B) {
	benchCommit(b, groupOfSize, CommitOptions{ForcePath: true})
}

// BenchmarkUpdateCommitFilledTree is BenchmarkUpdateCommit in a group
// whose every parent node is set, as after every member committed once:
// the steady state of a group that has lived a while, where a path is
// encrypted to one node per level instead of to every member.
func BenchmarkUpdateCommitFilledTree(b *testing.B) {
	benchCommit(b, filledGroupOfSize, CommitOptions{ForcePath: true})
}

var filledGroups struct {
	sync.Mutex
	m map[int]*benchGroup
}

// filledGroupOfSize returns a group of n members whose every parent node
// is set: the members at even leaves commit with a path in turn (in
// bit-reversed order, so that the upper levels fill first and later paths
// are cheap) and alice and bob process each Commit. Each such member acts
// through a copy of alice's state with its own leaf key and signer — a
// test shortcut for n separate clients, which would each have to process
// every Commit.
func filledGroupOfSize(b *testing.B, n int) *benchGroup {
	filledGroups.Lock()
	defer filledGroups.Unlock()
	if g := filledGroups.m[n]; g != nil {
		return g
	}
	alice, bob := newClient(b, testSuite, "alice"), newClient(b, testSuite, "bob")
	var err error
	alice.g, err = NewGroup(testSuite, randomID(b), alice.signer, alice.cred, LeafOptions{}, nil, Config{})
	if err != nil {
		b.Fatal(err)
	}
	bobKP := bob.keyPackage(b, testSuite)
	props := []Proposal{&AddProposal{KeyPackage: *bobKP.KeyPackage}}
	bundles := map[LeafIndex]*KeyPackageBundle{}
	for i := 2; i < n; i++ {
		kp := newClient(b, testSuite, fmt.Sprint("m", i)).keyPackage(b, testSuite)
		bundles[LeafIndex(i)] = kp
		props = append(props, &AddProposal{KeyPackage: *kp.KeyPackage})
	}
	commitAndDeliver(b, alice, CommitOptions{Proposals: props, RatchetTreeInWelcome: true}, nil, map[*client]*KeyPackageBundle{bob: bobKP}, Config{})
	bits := 0
	for 1<<bits < n {
		bits++
	}
	for i := range n / 2 {
		// The i-th even leaf in bit-reversed order of its half index.
		r := 0
		for k := range bits - 1 {
			r |= (i >> k & 1) << (bits - 2 - k)
		}
		l := LeafIndex(2 * r)
		committer := alice
		if l != 0 {
			kp := bundles[l]
			as, err := UnmarshalState(alice.g.MarshalState(), Config{})
			if err != nil {
				b.Fatal(err)
			}
			as.priv = newPrivateTree(l, clone(kp.EncryptionPriv), clone(kp.KeyPackage.LeafNode.EncryptionKey))
			as.signer = kp.Signer
			committer = &client{name: fmt.Sprint("m", l), g: as}
		}
		pc := commit(b, committer, CommitOptions{ForcePath: true})
		merge(b, committer)
		for _, c := range []*client{alice, bob} {
			if c == committer {
				continue
			}
			if _, err := process(b, c, pc.Message); err != nil {
				b.Fatalf("%s: commit from leaf %d: %v", c.name, l, err)
			}
		}
		if l != 0 {
			// The member's leaf key changed; its next commit (none here)
			// would need the new one.
			delete(bundles, l)
		}
	}
	for x, node := range alice.g.tree.nodes {
		if x%2 == 1 && node.parent == nil {
			b.Fatalf("parent node %d is blank", x)
		}
	}
	g := &benchGroup{alice: alice, bob: bob, bobState: bob.g.MarshalState()}
	if filledGroups.m == nil {
		filledGroups.m = map[int]*benchGroup{}
	}
	filledGroups.m[n] = g
	return g
}

// BenchmarkApplicationMessage measures a 1 KiB application message
// encrypted by alice, encoded, decoded and decrypted by bob, and in the
// same iterations (so under the same load) a crypto/ed25519 signature and
// verification of a message of the size MLS signs: the floor of an MLS
// implementation on crypto/ed25519 (the group's verification under a
// parsed key, cipher.Suite.ParseVerificationKey, goes below it). It
// reports both and their ratio.
func BenchmarkApplicationMessage(b *testing.B) {
	msg := make([]byte, 1024)
	pub, priv, _ := ed25519.GenerateKey(nil)
	for _, n := range benchSizes {
		b.Run(fmt.Sprint("members=", n), func(b *testing.B) {
			g := groupOfSize(b, n)
			// What MLS signs for msg: SignContent{"MLS 1.0 FramedContentTBS",
			// FramedContentTBS}, whose length prefixes take 1 and 2 bytes.
			fc := FramedContent{GroupID: g.alice.g.ctx.GroupID, Epoch: g.alice.g.Epoch(), Sender: Sender{Type: SenderTypeMember},
				ContentType: ContentTypeApplication, ApplicationData: msg}
			tbs := make([]byte, 1+len("MLS 1.0 "+labelFramedContentTBS)+2+len(framedContentTBS(WireFormatPrivateMessage, &fc, g.alice.g.ctxBytes)))
			var mlsTime, floor time.Duration
			for b.Loop() {
				t0 := time.Now()
				m, err := g.alice.g.Encrypt(msg, nil, 0)
				if err != nil {
					b.Fatal(err)
				}
				wire := m.Encode()
				if m, err = DecodeMLSMessage(wire); err != nil {
					b.Fatal(err)
				}
				if _, err := g.bob.g.Process(m); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if !ed25519.Verify(pub, tbs, ed25519.Sign(priv, tbs)) {
					b.Fatal("ed25519")
				}
				mlsTime += t1.Sub(t0)
				floor += time.Since(t1)
			}
			b.ReportMetric(float64(mlsTime.Nanoseconds())/float64(b.N), "mls-ns/op")
			b.ReportMetric(float64(floor.Nanoseconds())/float64(b.N), "ed25519-ns/op")
			b.ReportMetric(float64(mlsTime)/float64(floor), "ratio")
		})
	}
}
