package mls

import (
	"fmt"
	"testing"

	"github.com/quicproquo/qpq/mls/cipher"
)

// benchGroup builds a group of n members in which alice and bob are
// members and every member has committed once with a path is not assumed:
// alice adds everyone in one commit, then bob commits with a path so the
// tree above him is populated.
func benchGroup(b *testing.B, n int) (alice, bob *client) {
	const suite = cipher.X25519_AES128GCM_SHA256_Ed25519
	alice, bob = newClient(b, suite, "alice"), newClient(b, suite, "bob")
	var err error
	alice.g, err = NewGroup(suite, randomID(b), alice.signer, alice.cred, LeafOptions{}, nil, Config{})
	if err != nil {
		b.Fatal(err)
	}
	bobKP := bob.keyPackage(b, suite)
	props := []Proposal{&AddProposal{KeyPackage: *bobKP.KeyPackage}}
	for i := 2; i < n; i++ {
		c := newClient(b, suite, fmt.Sprint("m", i))
		props = append(props, &AddProposal{KeyPackage: *c.keyPackage(b, suite).KeyPackage})
	}
	commitAndDeliver(b, alice, CommitOptions{Proposals: props, RatchetTreeInWelcome: true}, nil, map[*client]*KeyPackageBundle{bob: bobKP}, Config{})
	commitAndDeliver(b, alice, CommitOptions{ForcePath: true}, []*client{bob}, nil, Config{})
	return alice, bob
}

func BenchmarkAddCommit(b *testing.B) {
	for _, n := range []int{2, 16, 128} {
		b.Run(fmt.Sprint("members=", n), func(b *testing.B) {
			alice, bob := benchGroup(b, n)
			newcomer := newClient(b, alice.g.CipherSuite(), "new")
			kp := newcomer.keyPackage(b, alice.g.CipherSuite())
			opts := CommitOptions{Proposals: []Proposal{&AddProposal{KeyPackage: *kp.KeyPackage}}, RatchetTreeInWelcome: true}
			b.Run("create", func(b *testing.B) {
				for b.Loop() {
					if _, err := alice.g.Commit(opts); err != nil {
						b.Fatal(err)
					}
				}
			})
			pc, err := alice.g.Commit(opts)
			if err != nil {
				b.Fatal(err)
			}
			state := bob.g.MarshalState()
			b.Run("process", func(b *testing.B) {
				for b.Loop() {
					b.StopTimer()
					g, err := UnmarshalState(state, Config{})
					if err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					if _, err := g.Process(pc.Message); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

func BenchmarkApplicationMessage(b *testing.B) {
	alice, bob := benchGroup(b, 2)
	msg := make([]byte, 1024)
	for b.Loop() {
		m, err := alice.g.Encrypt(msg, nil, 0)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := bob.g.Process(m); err != nil {
			b.Fatal(err)
		}
	}
}
