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
//	BenchmarkApplicationMessage
//	                          encrypt a 1 KiB message and decrypt it at
//	                          another member, next to the floor of its
//	                          Ed25519 signature and verification
//
// The group is built as a messenger builds one: the creator adds everyone
// in one Commit; only the creator and one member (bob) have committed with
// a path since. The parent nodes of the rest of the tree are blank, so a
// path is encrypted to every other member (the resolution of a blank
// subtree is all its leaves): the worst case for a Commit with a path.

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
// it at bob.
func benchCommit(b *testing.B, opts CommitOptions) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint("members=", n), func(b *testing.B) {
			g := groupOfSize(b, n)
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
	benchCommit(b, CommitOptions{Proposals: []Proposal{&AddProposal{KeyPackage: *kp.KeyPackage}}, RatchetTreeInWelcome: true})
}

func BenchmarkUpdateCommit(b *testing.B) {
	benchCommit(b, CommitOptions{ForcePath: true})
}

// BenchmarkApplicationMessage measures a 1 KiB application message
// encrypted by alice, encoded, decoded and decrypted by bob, and in the
// same iterations (so
// under the same load) an Ed25519 signature and verification of a message
// of the size MLS signs: the floor no MLS implementation goes below. It
// reports both and their ratio.
func BenchmarkApplicationMessage(b *testing.B) {
	msg := make([]byte, 1024)
	pub, priv, _ := ed25519.GenerateKey(nil)
	tbs := make([]byte, 1024+96) // FramedContentTBS of msg, with its label
	for _, n := range benchSizes {
		b.Run(fmt.Sprint("members=", n), func(b *testing.B) {
			g := groupOfSize(b, n)
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
