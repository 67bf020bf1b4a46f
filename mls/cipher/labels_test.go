package cipher

import (
	"bytes"
	"crypto/hkdf"
	"errors"
	"fmt"
	"testing"

	"github.com/quicproquo/qpq/mls/internal/testvec"
)

// suiteOrSkip returns the suite a vector case names, or skips the case
// saying why.
func suiteOrSkip(t *testing.T, id uint16) Suite {
	t.Helper()
	s, err := Lookup(ID(id))
	if err != nil {
		t.Skipf("cipher suite 0x%04x is not implemented: %v", id, err)
	}
	return s
}

// TestVectorCryptoBasics runs crypto-basics.json.
func TestVectorCryptoBasics(t *testing.T) {
	type hx = testvec.Hex
	var cases []struct {
		CipherSuite uint16 `json:"cipher_suite"`
		RefHash     struct {
			Label      string
			Value, Out hx
		} `json:"ref_hash"`
		ExpandWithLabel struct {
			Secret  hx
			Label   string
			Context hx
			Length  int
			Out     hx
		} `json:"expand_with_label"`
		DeriveSecret struct {
			Secret hx
			Label  string
			Out    hx
		} `json:"derive_secret"`
		DeriveTreeSecret struct {
			Secret     hx
			Label      string
			Generation uint32
			Length     int
			Out        hx
		} `json:"derive_tree_secret"`
		SignWithLabel struct {
			Priv, Pub, Content hx
			Label              string
			Signature          hx
		} `json:"sign_with_label"`
		EncryptWithLabel struct {
			Priv, Pub          hx
			Label              string
			Context, Plaintext hx
			KEMOutput          hx `json:"kem_output"`
			Ciphertext         hx
		} `json:"encrypt_with_label"`
	}
	testvec.Load(t, "crypto-basics.json", &cases)
	tally := testvec.NewTally(t, "crypto-basics.json")
	for _, c := range cases {
		tally.Case(t, c.CipherSuite, fmt.Sprintf("suite=0x%04x", c.CipherSuite), func(t *testing.T) {
			s := suiteOrSkip(t, c.CipherSuite)
			eq := func(field string, got, want []byte) {
				t.Helper()
				if !bytes.Equal(got, want) {
					t.Errorf("%s = %x, want %x", field, got, want)
				}
			}
			r := c.RefHash
			eq("ref_hash.out", RefHash(s, r.Label, r.Value), r.Out)

			e := c.ExpandWithLabel
			out, err := ExpandWithLabel(s, e.Secret, e.Label, e.Context, e.Length)
			if err != nil {
				t.Fatal(err)
			}
			eq("expand_with_label.out", out, e.Out)

			d := c.DeriveSecret
			out, err = DeriveSecret(s, d.Secret, d.Label)
			if err != nil {
				t.Fatal(err)
			}
			eq("derive_secret.out", out, d.Out)

			dt := c.DeriveTreeSecret
			out, err = DeriveTreeSecret(s, dt.Secret, dt.Label, dt.Generation, dt.Length)
			if err != nil {
				t.Fatal(err)
			}
			eq("derive_tree_secret.out", out, dt.Out)

			sg := c.SignWithLabel
			if err := VerifyWithLabel(s, sg.Pub, sg.Label, sg.Content, sg.Signature); err != nil {
				t.Errorf("sign_with_label: vector signature: %v", err)
			}
			signer, err := s.NewSigner(sg.Priv)
			if err != nil {
				t.Fatalf("sign_with_label.priv: %v", err)
			}
			eq("sign_with_label: public key of priv", signer.Public(), sg.Pub)
			eq("sign_with_label: re-encoded priv", signer.Bytes(), sg.Priv)
			sig, err := SignWithLabel(signer, sg.Label, sg.Content)
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyWithLabel(s, sg.Pub, sg.Label, sg.Content, sig); err != nil {
				t.Errorf("sign_with_label: own signature: %v", err)
			}
			if err := VerifyWithLabel(s, sg.Pub, sg.Label+"x", sg.Content, sig); !errors.Is(err, ErrSignature) {
				t.Errorf("sign_with_label: signature under another label: err = %v", err)
			}

			en := c.EncryptWithLabel
			pt, err := DecryptWithLabel(s, en.Priv, en.Label, en.Context, en.KEMOutput, en.Ciphertext)
			if err != nil {
				t.Fatalf("encrypt_with_label: decrypt vector: %v", err)
			}
			eq("encrypt_with_label.plaintext", pt, en.Plaintext)
			pub, err := s.KEMPublicKey(en.Priv)
			if err != nil {
				t.Fatal(err)
			}
			eq("encrypt_with_label: public key of priv", pub, en.Pub)
			kem, ct, err := EncryptWithLabel(s, en.Pub, en.Label, en.Context, en.Plaintext)
			if err != nil {
				t.Fatal(err)
			}
			pt, err = DecryptWithLabel(s, en.Priv, en.Label, en.Context, kem, ct)
			if err != nil {
				t.Fatalf("encrypt_with_label: decrypt own ciphertext: %v", err)
			}
			eq("encrypt_with_label: own round trip", pt, en.Plaintext)
			ct[0] ^= 1
			if _, err := DecryptWithLabel(s, en.Priv, en.Label, en.Context, kem, ct); !errors.Is(err, ErrDecrypt) {
				t.Errorf("encrypt_with_label: tampered ciphertext: err = %v", err)
			}
		})
	}
}

func TestDeriveKEMKeyDeterministic(t *testing.T) {
	for _, id := range Registered() {
		s, _ := Lookup(id)
		ikm := bytes.Repeat([]byte{7}, s.Nh())
		priv1, pub1, err := s.DeriveKEMKey(ikm)
		if err != nil {
			t.Fatalf("%v: %v", id, err)
		}
		priv2, pub2, _ := s.DeriveKEMKey(ikm)
		if !bytes.Equal(priv1, priv2) || !bytes.Equal(pub1, pub2) {
			t.Fatalf("%v: DeriveKEMKey not deterministic", id)
		}
		if pub, _ := s.KEMPublicKey(priv1); !bytes.Equal(pub, pub1) {
			t.Fatalf("%v: KEMPublicKey(derived priv) differs from derived pub", id)
		}
		enc, secret, err := s.HPKEExportSender(pub1, nil, []byte("ctx"), s.Nh())
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.HPKEExportReceiver(priv1, enc, nil, []byte("ctx"), s.Nh())
		if err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("%v: exported secrets differ (%v)", id, err)
		}
	}
}

func TestLookupUnknown(t *testing.T) {
	if _, err := Lookup(0x0a0a); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Lookup(GREASE) err = %v", err)
	}
}

// TestExpandOneBlock: the one-block fast path of Expand gives what
// HKDF-Expand gives, for every suite hash and the sizes around its limits.
func TestExpandOneBlock(t *testing.T) {
	for _, id := range Registered() {
		s, _ := Lookup(id)
		c := s.(*composite)
		for _, prkLen := range []int{0, 1, c.Nh(), 64, 65, 128, 129} {
			for _, infoLen := range []int{0, 1, 40, 255, 256, 257, 400} {
				for _, n := range []int{0, 1, 12, c.Nh() - 1, c.Nh(), c.Nh() + 1, 3 * c.Nh()} {
					prk := bytes.Repeat([]byte{byte(prkLen)}, prkLen)
					info := bytes.Repeat([]byte{byte(infoLen + 1)}, infoLen)
					got, err := c.Expand(prk, info, n)
					if err != nil {
						t.Fatal(err)
					}
					want, err := hkdf.Expand(c.newHash, prk, string(info), n)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got, want) {
						t.Fatalf("%v: prk %d info %d length %d: %x, want %x", id, prkLen, infoLen, n, got, want)
					}
				}
			}
		}
	}
}
