package cipher

import (
	"bytes"
	"errors"
	"testing"

	"github.com/quicproquo/qpq/mls/internal/testvec"
)

// FuzzKeyParsers feeds arbitrary bytes to every method that parses a key,
// an encapsulation or a signature received from a peer: none may panic,
// each failure must be the documented sentinel, and a key that parses must
// re-encode to its canonical form and work.
func FuzzKeyParsers(f *testing.F) {
	var cases []struct {
		CipherSuite   uint16 `json:"cipher_suite"`
		SignWithLabel struct {
			Priv, Pub, Signature testvec.Hex
		} `json:"sign_with_label"`
		EncryptWithLabel struct {
			Priv, Pub  testvec.Hex
			KEMOutput  testvec.Hex `json:"kem_output"`
			Ciphertext testvec.Hex
		} `json:"encrypt_with_label"`
	}
	testvec.Load(f, "crypto-basics.json", &cases)
	ids := Registered()
	for _, c := range cases {
		i := -1
		for j, id := range ids {
			if id == ID(c.CipherSuite) {
				i = j
			}
		}
		if i < 0 {
			continue
		}
		for _, b := range [][]byte{
			c.SignWithLabel.Priv, c.SignWithLabel.Pub, c.SignWithLabel.Signature,
			c.EncryptWithLabel.Priv, c.EncryptWithLabel.Pub, c.EncryptWithLabel.KEMOutput,
			c.EncryptWithLabel.Ciphertext, c.SignWithLabel.Priv[1:], c.EncryptWithLabel.Pub[1:],
		} {
			f.Add(uint8(i), []byte(b))
		}
	}
	f.Add(uint8(0), []byte{})
	f.Add(uint8(4), []byte{1})

	// One valid KEM key pair per suite to open fuzzed encapsulations with.
	kemPriv := make([][]byte, len(ids))
	for i, id := range ids {
		s, _ := Lookup(id)
		priv, _, err := s.DeriveKEMKey([]byte("fuzz"))
		if err != nil {
			f.Fatal(err)
		}
		kemPriv[i] = priv
	}

	f.Fuzz(func(t *testing.T, suite uint8, b []byte) {
		i := int(suite) % len(ids)
		s, _ := Lookup(ids[i])
		msg := []byte("msg")

		if signer, err := s.NewSigner(b); err != nil {
			if !errors.Is(err, ErrKey) {
				t.Fatalf("NewSigner: %v", err)
			}
		} else {
			enc := signer.Bytes()
			if !bytes.Equal(enc, b) && !bytes.Equal(enc, padScalar(b, len(enc))) {
				t.Fatalf("NewSigner(%x).Bytes() = %x", b, enc)
			}
			sig, err := signer.Sign(msg)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Verify(signer.Public(), msg, sig); err != nil {
				t.Fatalf("signature of a parsed key does not verify: %v", err)
			}
		}

		if err := s.Verify(b, msg, b); err == nil {
			t.Fatalf("Verify(%x, msg, %x) accepted", b, b)
		} else if !errors.Is(err, ErrKey) && !errors.Is(err, ErrSignature) {
			t.Fatalf("Verify: %v", err)
		}

		if pub, err := s.KEMPublicKey(b); err != nil {
			if !errors.Is(err, ErrKey) {
				t.Fatalf("KEMPublicKey: %v", err)
			}
		} else {
			enc, ct, err := s.HPKESeal(pub, nil, msg)
			if err != nil {
				t.Fatalf("HPKESeal to the public key of a parsed private key: %v", err)
			}
			if pt, err := s.HPKEOpen(b, enc, nil, ct); err != nil || !bytes.Equal(pt, msg) {
				t.Fatalf("HPKEOpen with a parsed private key: %q, %v", pt, err)
			}
		}

		if _, _, err := s.HPKESeal(b, nil, msg); err != nil && !errors.Is(err, ErrKey) {
			t.Fatalf("HPKESeal: %v", err)
		}
		if _, err := s.HPKEOpen(kemPriv[i], b, nil, b); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("HPKEOpen(enc %x): err = %v", b, err)
		}

		if _, err := s.NewAEAD(b); (err == nil) != (len(b) == s.KeySize()) || err != nil && !errors.Is(err, ErrKey) {
			t.Fatalf("NewAEAD(%d bytes): %v", len(b), err)
		}
	})
}
