package mls

import (
	"errors"
	"fmt"
	"testing"

	"github.com/quicproquo/qpq/mls/internal/testvec"
	"github.com/quicproquo/qpq/mls/treemath"
)

// TestVectorSecretTree runs secret-tree.json.
func TestVectorSecretTree(t *testing.T) {
	var cases []struct {
		CipherSuite uint16 `json:"cipher_suite"`
		SenderData  struct {
			Secret     hx `json:"sender_data_secret"`
			Ciphertext hx
			Key, Nonce hx
		} `json:"sender_data"`
		EncryptionSecret hx `json:"encryption_secret"`
		Leaves           [][]struct {
			Generation       uint32
			HandshakeKey     hx `json:"handshake_key"`
			HandshakeNonce   hx `json:"handshake_nonce"`
			ApplicationKey   hx `json:"application_key"`
			ApplicationNonce hx `json:"application_nonce"`
		}
	}
	testvec.Load(t, "secret-tree.json", &cases)
	tally := testvec.NewTally(t, "secret-tree.json")
	for i, c := range cases {
		tally.Case(t, c.CipherSuite, fmt.Sprintf("%d/suite=0x%04x/leaves=%d", i, c.CipherSuite, len(c.Leaves)), func(t *testing.T) {
			s := suiteOrSkip(t, c.CipherSuite)
			sd := senderDataKeyNonce(s, c.SenderData.Secret, c.SenderData.Ciphertext)
			eq(t, "sender_data.key", sd.key, c.SenderData.Key)
			eq(t, "sender_data.nonce", sd.nonce, c.SenderData.Nonce)

			st := newSecretTree(s, RatchetConfig{}, c.EncryptionSecret, uint32(len(c.Leaves)))
			for leaf, gens := range c.Leaves {
				for _, g := range gens {
					l := treemath.LeafIndex(leaf)
					hs, ha, err := st.get(l, handshakeRatchet, g.Generation)
					if err != nil {
						t.Fatalf("leaf %d handshake generation %d: %v", leaf, g.Generation, err)
					}
					app, aa, err := st.get(l, applicationRatchet, g.Generation)
					if err != nil {
						t.Fatalf("leaf %d application generation %d: %v", leaf, g.Generation, err)
					}
					field := func(name string) string { return fmt.Sprintf("leaves[%d] generation %d %s", leaf, g.Generation, name) }
					eq(t, field("handshake_key"), hs.key, g.HandshakeKey)
					eq(t, field("handshake_nonce"), hs.nonce, g.HandshakeNonce)
					eq(t, field("application_key"), app.key, g.ApplicationKey)
					eq(t, field("application_nonce"), app.nonce, g.ApplicationNonce)
					// As a receiver does: the next generation derives from
					// the advanced ratchets.
					st.consume(ha)
					st.consume(aa)
				}
			}
		})
	}
}

func TestSecretTreeWindow(t *testing.T) {
	s := suiteOrSkip(t, 1)
	secret := make([]byte, s.Nh())
	st := newSecretTree(s, RatchetConfig{MaxForward: 10, OutOfOrder: 3}, secret, 4)
	if _, _, err := st.get(1, applicationRatchet, 11); !errors.Is(err, ErrGenerationTooNew) {
		t.Fatalf("jump of 11 > 10: err = %v", err)
	}
	k5, a5, err := st.get(1, applicationRatchet, 5)
	if err != nil {
		t.Fatal(err)
	}
	key5 := clone(k5.key) // consume wipes the returned key
	st.consume(a5)
	if _, _, err := st.get(1, applicationRatchet, 5); !errors.Is(err, ErrReplay) || !st.used(1, applicationRatchet, 5) {
		t.Fatalf("replay of a consumed generation: err = %v", err)
	}
	// 2, 3, 4 are inside the window of 3 below the newest (5); 1 is not.
	for _, g := range []uint32{2, 3, 4} {
		if _, _, err := st.get(1, applicationRatchet, g); err != nil {
			t.Fatalf("late generation %d: %v", g, err)
		}
	}
	if _, _, err := st.get(1, applicationRatchet, 1); !errors.Is(err, ErrGenerationTooOld) {
		t.Fatalf("generation 1 beyond the window: err = %v", err)
	}
	// A sender ratchet yields the same keys as a receiver's.
	sender := newSecretTree(s, RatchetConfig{}, secret, 4)
	for g := uint32(0); g <= 5; g++ {
		kn, gen, err := sender.next(1, applicationRatchet)
		if err != nil || gen != g {
			t.Fatalf("next: gen %d, %v", gen, err)
		}
		if g == 5 {
			eq(t, "generation 5 key", kn.key, key5)
		}
	}
	// Other leaves are still derivable after leaf 1 consumed its path.
	for l := treemath.LeafIndex(0); l < 4; l++ {
		_, a, err := st.get(l, handshakeRatchet, 0)
		if err != nil {
			t.Fatalf("leaf %d: %v", l, err)
		}
		st.consume(a)
	}
	for _, n := range st.nodes {
		if n != nil {
			t.Fatalf("a node secret is still held after every leaf was derived")
		}
	}
}
