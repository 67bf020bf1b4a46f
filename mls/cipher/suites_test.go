package cipher

import (
	"bytes"
	"encoding/hex"
	"errors"
	"slices"
	"testing"
)

// suiteSizes lists what RFC 9420 §17.1, RFC 9180 §7 and the key formats of
// the package doc fix for each suite.
var suiteSizes = []struct {
	id                 ID
	name               string
	nh, nk             int
	kemPriv, kemPub    int
	sigPriv, sigPub    int
	nist               bool // NIST-curve keys: big-endian scalars, uncompressed points
	kemLowOrderPubZero bool // the all-zero public key is a low-order point
}{
	{X25519_AES128GCM_SHA256_Ed25519, "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519", 32, 16, 32, 32, 32, 32, false, true},
	{P256_AES128GCM_SHA256_P256, "MLS_128_DHKEMP256_AES128GCM_SHA256_P256", 32, 16, 32, 65, 32, 65, true, false},
	{X25519_CHACHA20POLY1305_SHA256_Ed25519, "MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519", 32, 32, 32, 32, 32, 32, false, true},
	{X448_AES256GCM_SHA512_Ed448, "MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448", 64, 32, 56, 56, 57, 57, false, true},
	{P521_AES256GCM_SHA512_P521, "MLS_256_DHKEMP521_AES256GCM_SHA512_P521", 64, 32, 66, 133, 66, 133, true, false},
	{X448_CHACHA20POLY1305_SHA512_Ed448, "MLS_256_DHKEMX448_CHACHA20POLY1305_SHA512_Ed448", 64, 32, 56, 56, 57, 57, false, true},
	{P384_AES256GCM_SHA384_P384, "MLS_256_DHKEMP384_AES256GCM_SHA384_P384", 48, 32, 48, 97, 48, 97, true, false},
}

func lookup(t *testing.T, id ID) Suite {
	t.Helper()
	s, err := Lookup(id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAllSuitesRegistered(t *testing.T) {
	var want []ID
	for _, c := range suiteSizes {
		want = append(want, c.id)
	}
	if got := Registered(); !slices.Equal(got, want) {
		t.Fatalf("Registered() = %v, want %v", got, want)
	}
	for _, c := range suiteSizes {
		s := lookup(t, c.id)
		if s.ID() != c.id || s.Name() != c.name || c.id.String() != c.name {
			t.Errorf("0x%04x: ID %v, Name %q, String %q", uint16(c.id), s.ID(), s.Name(), c.id.String())
		}
		if s.Nh() != c.nh || len(s.Hash(nil)) != c.nh || len(s.MAC([]byte("k"), nil)) != c.nh || len(s.Extract(nil, nil)) != c.nh {
			t.Errorf("%v: Nh %d, want %d", c.id, s.Nh(), c.nh)
		}
		if s.KeySize() != c.nk || s.NonceSize() != 12 {
			t.Errorf("%v: Nk %d Nn %d, want %d 12", c.id, s.KeySize(), s.NonceSize(), c.nk)
		}
	}
}

func TestAEADRoundTrip(t *testing.T) {
	for _, c := range suiteSizes {
		s := lookup(t, c.id)
		key := bytes.Repeat([]byte{1}, s.KeySize())
		a, err := s.NewAEAD(key)
		if err != nil {
			t.Fatalf("%v: %v", c.id, err)
		}
		if a.NonceSize() != s.NonceSize() {
			t.Errorf("%v: AEAD nonce size %d", c.id, a.NonceSize())
		}
		nonce := make([]byte, a.NonceSize())
		ct := a.Seal(nil, nonce, []byte("hello"), []byte("aad"))
		if pt, err := a.Open(nil, nonce, ct, []byte("aad")); err != nil || string(pt) != "hello" {
			t.Errorf("%v: AEAD round trip: %q, %v", c.id, pt, err)
		}
		if _, err := a.Open(nil, nonce, ct, []byte("aax")); err == nil {
			t.Errorf("%v: AEAD opened under the wrong aad", c.id)
		}
		for _, n := range []int{0, s.KeySize() - 1, s.KeySize() + 1} {
			if _, err := s.NewAEAD(make([]byte, n)); !errors.Is(err, ErrKey) {
				t.Errorf("%v: NewAEAD(%d-byte key): err = %v, want ErrKey", c.id, n, err)
			}
		}
	}
}

func TestKEMRoundTrip(t *testing.T) {
	for _, c := range suiteSizes {
		t.Run(c.id.String(), func(t *testing.T) {
			s := lookup(t, c.id)
			priv, pub, err := s.GenerateKEMKey()
			if err != nil {
				t.Fatal(err)
			}
			if len(priv) != c.kemPriv || len(pub) != c.kemPub {
				t.Fatalf("key sizes %d/%d, want %d/%d", len(priv), len(pub), c.kemPriv, c.kemPub)
			}
			if got, err := s.KEMPublicKey(priv); err != nil || !bytes.Equal(got, pub) {
				t.Fatalf("KEMPublicKey(priv) = %x, %v; want %x", got, err, pub)
			}
			info, pt := []byte("info"), []byte("plaintext")
			enc, ct, err := s.HPKESeal(pub, info, pt)
			if err != nil {
				t.Fatal(err)
			}
			if len(enc) != c.kemPub {
				t.Errorf("enc is %d bytes, want %d", len(enc), c.kemPub)
			}
			if got, err := s.HPKEOpen(priv, enc, info, ct); err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("HPKEOpen = %q, %v", got, err)
			}
			other, _, _ := s.GenerateKEMKey()
			badEnc := slices.Clone(enc)
			badEnc[len(badEnc)-1] ^= 1
			badCT := slices.Clone(ct)
			badCT[0] ^= 1
			for name, open := range map[string]func() ([]byte, error){
				"wrong info":       func() ([]byte, error) { return s.HPKEOpen(priv, enc, []byte("infx"), ct) },
				"wrong key":        func() ([]byte, error) { return s.HPKEOpen(other, enc, info, ct) },
				"tampered enc":     func() ([]byte, error) { return s.HPKEOpen(priv, badEnc, info, ct) },
				"tampered ct":      func() ([]byte, error) { return s.HPKEOpen(priv, enc, info, badCT) },
				"short enc":        func() ([]byte, error) { return s.HPKEOpen(priv, enc[:len(enc)-1], info, ct) },
				"empty ciphertext": func() ([]byte, error) { return s.HPKEOpen(priv, enc, info, nil) },
			} {
				if _, err := open(); !errors.Is(err, ErrDecrypt) {
					t.Errorf("%s: err = %v, want ErrDecrypt", name, err)
				}
			}

			enc, secret, err := s.HPKEExportSender(pub, info, []byte("ctx"), 42)
			if err != nil || len(secret) != 42 {
				t.Fatalf("HPKEExportSender: %d bytes, %v", len(secret), err)
			}
			if got, err := s.HPKEExportReceiver(priv, enc, info, []byte("ctx"), 42); err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("HPKEExportReceiver = %x, %v; want %x", got, err, secret)
			}
			if got, _ := s.HPKEExportReceiver(priv, enc, info, []byte("ctx2"), 42); bytes.Equal(got, secret) {
				t.Fatal("exports under different contexts are equal")
			}
			if _, _, err := s.HPKEExportSender(pub, info, nil, 255*s.Nh()+1); err == nil {
				t.Error("export longer than 255*Nh succeeded")
			}

			// DeriveKeyPair takes ikm of any length: MLS feeds it Nh-byte
			// secrets, which for X448 suites are longer than Nsk.
			for _, n := range []int{0, 1, c.nh, 200} {
				dpriv, dpub, err := s.DeriveKEMKey(bytes.Repeat([]byte{9}, n))
				if err != nil || len(dpriv) != c.kemPriv || len(dpub) != c.kemPub {
					t.Errorf("DeriveKEMKey(%d-byte ikm): %d/%d bytes, %v", n, len(dpriv), len(dpub), err)
				}
			}
		})
	}
}

func TestSignatureRoundTrip(t *testing.T) {
	for _, c := range suiteSizes {
		t.Run(c.id.String(), func(t *testing.T) {
			s := lookup(t, c.id)
			signer, err := s.GenerateSigner()
			if err != nil {
				t.Fatal(err)
			}
			pub, priv := signer.Public(), signer.Bytes()
			if len(pub) != c.sigPub || len(priv) != c.sigPriv {
				t.Fatalf("key sizes %d/%d, want %d/%d", len(priv), len(pub), c.sigPriv, c.sigPub)
			}
			loaded, err := s.NewSigner(priv)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(loaded.Public(), pub) || !bytes.Equal(loaded.Bytes(), priv) {
				t.Fatal("reloaded signer has another key")
			}
			msg := []byte("message")
			sig, err := loaded.Sign(msg)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Verify(pub, msg, sig); err != nil {
				t.Fatalf("Verify(own signature): %v", err)
			}
			other, _ := s.GenerateSigner()
			flipped := slices.Clone(sig)
			flipped[len(flipped)/2] ^= 1
			for name, v := range map[string]func() error{
				"other message":  func() error { return s.Verify(pub, []byte("messagf"), sig) },
				"other key":      func() error { return s.Verify(other.Public(), msg, sig) },
				"flipped bit":    func() error { return s.Verify(pub, msg, flipped) },
				"truncated":      func() error { return s.Verify(pub, msg, sig[:len(sig)-1]) },
				"trailing byte":  func() error { return s.Verify(pub, msg, append(slices.Clone(sig), 0)) },
				"empty":          func() error { return s.Verify(pub, msg, nil) },
				"all zero bytes": func() error { return s.Verify(pub, msg, make([]byte, len(sig))) },
			} {
				if err := v(); !errors.Is(err, ErrSignature) {
					t.Errorf("%s: err = %v, want ErrSignature", name, err)
				}
			}
		})
	}
}

// TestMalformedKeys feeds every key-taking method keys that are not keys of
// the suite: each must answer ErrKey.
func TestMalformedKeys(t *testing.T) {
	for _, c := range suiteSizes {
		t.Run(c.id.String(), func(t *testing.T) {
			s := lookup(t, c.id)
			_, kemPub, _ := s.GenerateKEMKey()
			enc, _, _ := s.HPKESeal(kemPub, nil, nil)
			signer, _ := s.GenerateSigner()

			badPriv := func(size int) [][]byte {
				bad := [][]byte{nil, make([]byte, size+1), make([]byte, 2*size)}
				if c.nist {
					// A shorter scalar is read left-padded; zero and
					// values at or above the group order are not keys.
					bad = append(bad, make([]byte, size), bytes.Repeat([]byte{0xff}, size))
				} else {
					bad = append(bad, make([]byte, size-1))
				}
				return bad
			}
			badPub := func(valid []byte) [][]byte {
				bad := [][]byte{nil, valid[:len(valid)-1], append(slices.Clone(valid), 0)}
				if c.nist {
					onlyX := append([]byte{0x02 | valid[len(valid)-1]&1}, valid[1:1+(len(valid)-1)/2]...)
					notOnCurve := slices.Clone(valid)
					notOnCurve[len(notOnCurve)-1] ^= 1
					bad = append(bad, onlyX, notOnCurve, make([]byte, len(valid)))
				}
				return bad
			}

			for _, p := range badPriv(c.kemPriv) {
				if _, err := s.KEMPublicKey(p); !errors.Is(err, ErrKey) {
					t.Errorf("KEMPublicKey(%x): err = %v", p, err)
				}
				if _, err := s.HPKEOpen(p, enc, nil, nil); !errors.Is(err, ErrKey) {
					t.Errorf("HPKEOpen(priv %x): err = %v", p, err)
				}
				if _, err := s.HPKEExportReceiver(p, enc, nil, nil, 8); !errors.Is(err, ErrKey) {
					t.Errorf("HPKEExportReceiver(priv %x): err = %v", p, err)
				}
			}
			kemPubs := badPub(kemPub)
			if c.kemLowOrderPubZero {
				kemPubs = append(kemPubs, make([]byte, len(kemPub)))
			}
			for _, p := range kemPubs {
				if _, _, err := s.HPKESeal(p, nil, nil); !errors.Is(err, ErrKey) {
					t.Errorf("HPKESeal(pub %x): err = %v", p, err)
				}
				if _, _, err := s.HPKEExportSender(p, nil, nil, 8); !errors.Is(err, ErrKey) {
					t.Errorf("HPKEExportSender(pub %x): err = %v", p, err)
				}
			}
			for _, p := range badPriv(c.sigPriv) {
				if _, err := s.NewSigner(p); !errors.Is(err, ErrKey) {
					t.Errorf("NewSigner(%x): err = %v", p, err)
				}
			}
			sigPubs := badPub(signer.Public())
			if c.id == X448_AES256GCM_SHA512_Ed448 || c.id == X448_CHACHA20POLY1305_SHA512_Ed448 {
				sigPubs = append(sigPubs, bytes.Repeat([]byte{0xff}, c.sigPub)) // y >= p
			}
			sig, _ := signer.Sign([]byte("m"))
			for _, p := range sigPubs {
				if err := s.Verify(p, []byte("m"), sig); !errors.Is(err, ErrKey) {
					t.Errorf("Verify(pub %x): err = %v", p, err)
				}
			}
		})
	}
}

// TestShortNISTScalars checks that a NIST-curve private key written in
// minimal big-endian form (as in the suite 0x0005 vectors) is read as the
// fixed-length scalar and written back at full length.
func TestShortNISTScalars(t *testing.T) {
	for _, c := range suiteSizes {
		if !c.nist {
			continue
		}
		s := lookup(t, c.id)
		one := []byte{1}
		full := padScalar(one, c.sigPriv)
		signer, err := s.NewSigner(one)
		if err != nil {
			t.Fatalf("%v: NewSigner(1): %v", c.id, err)
		}
		fullSigner, _ := s.NewSigner(full)
		if !bytes.Equal(signer.Bytes(), full) || !bytes.Equal(signer.Public(), fullSigner.Public()) {
			t.Errorf("%v: scalar 1 in one byte is not the key 1", c.id)
		}
		pub, err := s.KEMPublicKey(one)
		if err != nil {
			t.Fatalf("%v: KEMPublicKey(1): %v", c.id, err)
		}
		if want, _ := s.KEMPublicKey(full); !bytes.Equal(pub, want) {
			t.Errorf("%v: KEM scalar 1 in one byte is not the key 1", c.id)
		}
		// The generator is the public key of 1, in both schemes.
		if !bytes.Equal(pub, signer.Public()) {
			t.Errorf("%v: KEM and signature public keys of 1 differ", c.id)
		}
	}
}

// TestX448HPKEVectors checks the X448 HPKE composition, including our
// DeriveKeyPair, against the RFC 9180 test vectors (base mode, KEM 0x0021,
// HKDF-SHA512; from github.com/cfrg/draft-irtf-cfrg-hpke test-vectors.json).
func TestX448HPKEVectors(t *testing.T) {
	h := func(s string) []byte {
		b, err := hex.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, v := range []struct {
		suite                       ID
		ikmR, skRm, pkRm, enc, info string
		exports                     map[string]string // exporter_context → 32-byte value
	}{
		{
			suite: X448_AES256GCM_SHA512_Ed448, // AEAD 0x0002
			ikmR:  "93e714430d3cb00e8e8a03dd820dcbcc7f0141f93c63a7dede2dfb152b5b23982a1a55f2d86dd9e0f5a0f53b9c21605257ec1349d7f89e53",
			skRm:  "c4e72a57af1640806c01617b947ee6d1bbe5eb1a5b4616fb705a5d2ed30b7f4317365c504249750e090805d44a2ddc2970172414a90a09e5",
			pkRm:  "d920db89afdb25df110a44cf0d7dc4e4d4b74f09ceaba5e76a12d3cafefcd962e244804a58bfd12303732be21d511f877ddc2ed694447b3d",
			enc:   "390f2971ca97d513915a2bc5aac0cb81b832d9424d2264eaa9e868d80862edd7918276883a8d0434309e049408fec2340ae5799702f948d7",
			info:  "4f6465206f6e2061204772656369616e2055726e",
			exports: map[string]string{
				"":                       "596003579117f3edeeeeb84e602b1ff316fd6771ebeb9bd400fd5ae9155199ab",
				"00":                     "d0a4a36284288e3bffe9da9b84bc99da99d7912011bc26c462504e2596229246",
				"54657374436f6e74657874": "419d16ff65523a00452d37ba2fd5f2b1a9261aeb30f1b1736cc2f3febb16c884",
			},
		},
		{
			suite: X448_CHACHA20POLY1305_SHA512_Ed448, // AEAD 0x0003
			ikmR:  "1a91ec4a112661d663caad07437e07486dcc80b499c83c6bf17fb2faba77c180404d983bd32ed4284fa1aee3bb3887b61402036b058c3c8d",
			skRm:  "c2f51845154d6bb6917e44ef0fa0a1fbf1d80f61d199486e75295e8a7e50432d548a7f8040953826c4f1bce79e433dedb4469391c3cc98a1",
			pkRm:  "f2fdb31a7829a6d2d78b9d8b670397457c92cb2417af37dbe0c1c12a9547e4eda9fde09fc3fe0f359bb7b4151e8a6fb592530af71d9dc0b5",
			enc:   "3d4f6aa08c635205bcd96a0791695d08638714474b4d2c0132b69e25cdb826e1a2a84bc0c40c4fc75f52051b034e0afa82b8457e28794f92",
			info:  "4f6465206f6e2061204772656369616e2055726e",
			exports: map[string]string{
				"":                       "d13d9f30a9de3369f25b8de6a733d9c5b68a79b148a662a44cb84e9296419ed6",
				"00":                     "e584af331daaab516a39e2ba8a3421e428918e108c88dda9e921fc6ecb86fd5f",
				"54657374436f6e74657874": "f4b7df9f1f608657f97084d9847cab976e88083fd2d35f3636dcaa9a14ce62e5",
			},
		},
	} {
		s := lookup(t, v.suite)
		priv, pub, err := s.DeriveKEMKey(h(v.ikmR))
		if err != nil {
			t.Fatal(err)
		}
		wantPriv := h(v.skRm)
		wantPriv[0] &= 252 // SerializePrivateKey clamps (RFC 9180 §7.1.2)
		wantPriv[55] |= 128
		if !bytes.Equal(priv, wantPriv) || !bytes.Equal(pub, h(v.pkRm)) {
			t.Errorf("%v: DeriveKeyPair = %x, %x; want %x, %s", v.suite, priv, pub, wantPriv, v.pkRm)
		}
		for ctx, want := range v.exports {
			got, err := s.HPKEExportReceiver(h(v.skRm), h(v.enc), h(v.info), h(ctx), 32)
			if err != nil || !bytes.Equal(got, h(want)) {
				t.Errorf("%v: export %q = %x, %v; want %s", v.suite, ctx, got, err, want)
			}
		}
	}
}
