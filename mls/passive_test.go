package mls

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mls/codec"
	"github.com/quicproquo/qpq/mls/internal/testvec"
)

type passiveVector struct {
	CipherSuite  uint16 `json:"cipher_suite"`
	ExternalPSKs []struct {
		PSKID hx `json:"psk_id"`
		PSK   hx `json:"psk"`
	} `json:"external_psks"`
	KeyPackage                hx `json:"key_package"`
	SignaturePriv             hx `json:"signature_priv"`
	EncryptionPriv            hx `json:"encryption_priv"`
	InitPriv                  hx `json:"init_priv"`
	Welcome                   hx
	RatchetTree               hx `json:"ratchet_tree"`
	InitialEpochAuthenticator hx `json:"initial_epoch_authenticator"`
	Epochs                    []struct {
		Proposals          []hx
		Commit             hx
		EpochAuthenticator hx `json:"epoch_authenticator"`
	}
}

// runPassiveClient joins by Welcome and follows every epoch, checking each
// epoch authenticator. Leaf lifetimes are checked against now: the vector
// files were generated at different dates, each with leaves valid for a
// year from then.
func runPassiveClient(t *testing.T, file string, now time.Time) {
	var cases []passiveVector
	testvec.Load(t, file, &cases)
	tally := testvec.NewTally(t, file)
	for i, c := range cases {
		tally.Case(t, c.CipherSuite, fmt.Sprintf("%d/suite=0x%04x/epochs=%d", i, c.CipherSuite, len(c.Epochs)), func(t *testing.T) {
			raceSample(t, c.CipherSuite, i)
			s := suiteOrSkip(t, c.CipherSuite)
			kpm, err := DecodeMLSMessage(c.KeyPackage)
			if err != nil || kpm.KeyPackage == nil {
				t.Fatalf("key_package: %v", err)
			}
			kp := kpm.KeyPackage
			signer, err := s.NewSigner(c.SignaturePriv)
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "signature_priv: public key", signer.Public(), kp.LeafNode.SignatureKey)
			pub, err := s.KEMPublicKey(c.EncryptionPriv)
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "encryption_priv: public key", pub, kp.LeafNode.EncryptionKey)
			if pub, err = s.KEMPublicKey(c.InitPriv); err != nil {
				t.Fatal(err)
			}
			eq(t, "init_priv: public key", pub, kp.InitKey)

			psks := ExternalPSKs{}
			for _, p := range c.ExternalPSKs {
				psks[string(p.PSKID)] = p.PSK
			}
			var tree RatchetTree
			if c.RatchetTree != nil {
				if err := codec.Unmarshal(c.RatchetTree, &tree); err != nil {
					t.Fatalf("ratchet_tree: %v", err)
				}
			}
			wm, err := DecodeMLSMessage(c.Welcome)
			if err != nil || wm.Welcome == nil {
				t.Fatalf("welcome: %v", err)
			}
			cfg := Config{PSKs: psks, Now: func() time.Time { return now }}
			g, err := JoinWelcome(wm.Welcome, &KeyPackageBundle{KeyPackage: kp, InitPriv: c.InitPriv, EncryptionPriv: c.EncryptionPriv, Signer: signer}, tree, cfg)
			if err != nil {
				t.Fatalf("join: %v", err)
			}
			eq(t, "initial_epoch_authenticator", g.EpochAuthenticator(), c.InitialEpochAuthenticator)
			for e, ep := range c.Epochs {
				for p, raw := range ep.Proposals {
					m, err := DecodeMLSMessage(raw)
					if err != nil {
						t.Fatalf("epochs[%d].proposals[%d]: %v", e, p, err)
					}
					if _, err := g.Process(m); err != nil {
						t.Fatalf("epochs[%d].proposals[%d]: %v", e, p, err)
					}
				}
				m, err := DecodeMLSMessage(ep.Commit)
				if err != nil {
					t.Fatalf("epochs[%d].commit: %v", e, err)
				}
				r, err := g.Process(m)
				if err != nil {
					t.Fatalf("epochs[%d].commit: %v", e, err)
				}
				if r.Commit == nil || r.Commit.RemovedSelf {
					t.Fatalf("epochs[%d].commit: did not advance the epoch (%+v)", e, r.Commit)
				}
				if !bytes.Equal(g.EpochAuthenticator(), ep.EpochAuthenticator) {
					t.Fatalf("epochs[%d].epoch_authenticator = %x, want %x", e, g.EpochAuthenticator(), ep.EpochAuthenticator)
				}
			}
		})
	}
}

func TestVectorPassiveClientWelcome(t *testing.T) {
	runPassiveClient(t, "passive-client-welcome.json", time.Date(2023, 6, 1, 0, 0, 0, 0, time.UTC))
}

func TestVectorPassiveClientHandlingCommit(t *testing.T) {
	runPassiveClient(t, "passive-client-handling-commit.json", time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC))
}

func TestVectorPassiveClientRandom(t *testing.T) {
	runPassiveClient(t, "passive-client-random.json", time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC))
}
