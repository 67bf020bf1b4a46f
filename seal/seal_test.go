package seal

import (
	"bytes"
	"crypto/hpke"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/envelope-v1.json")

func mustKey(t testing.TB) *PrivateKey {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustSeal(t testing.TB, to *PublicKey, pt []byte) []byte {
	t.Helper()
	s, err := Seal(to, pt)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRoundTrip(t *testing.T) {
	k := mustKey(t)
	for _, n := range []int{0, 1, 16, 1024, 64 << 10, MaxPlaintextSize} {
		pt := bytes.Repeat([]byte{byte(n)}, n)
		s := mustSeal(t, k.Public(), pt)
		if len(s) != Overhead+n {
			t.Fatalf("len(seal(%d bytes)) = %d, want %d", n, len(s), Overhead+n)
		}
		if s[0] != Version {
			t.Fatalf("version byte = 0x%02x", s[0])
		}
		got, err := Open(k, s)
		if err != nil {
			t.Fatalf("open %d bytes: %v", n, err)
		}
		if !bytes.Equal(got, pt) {
			t.Fatalf("open %d bytes: plaintext differs", n)
		}
	}
}

func TestFreshEphemeralEachSeal(t *testing.T) {
	k := mustKey(t)
	a := mustSeal(t, k.Public(), []byte("same"))
	b := mustSeal(t, k.Public(), []byte("same"))
	if bytes.Equal(a[1:1+EncSize], b[1:1+EncSize]) {
		t.Fatal("two envelopes share an encapsulated key")
	}
}

func TestWrongKey(t *testing.T) {
	alice, mallory := mustKey(t), mustKey(t)
	s := mustSeal(t, alice.Public(), []byte("for alice only"))
	if _, err := Open(mallory, s); !errors.Is(err, ErrOpen) {
		t.Fatalf("open with wrong key: err = %v, want ErrOpen", err)
	}
}

func TestTamperedParts(t *testing.T) {
	k := mustKey(t)
	pt := []byte("attack at dawn, bring snacks")
	s := mustSeal(t, k.Public(), pt)
	tagAt := len(s) - TagSize
	tests := []struct {
		name string
		at   int
		want error
	}{
		{"version", 0, ErrVersion},
		{"enc ML-KEM first byte", 1, ErrOpen},
		{"enc ML-KEM last byte", 1 + 1087, ErrOpen},
		{"enc X25519 first byte", 1 + 1088, ErrOpen},
		{"enc X25519 last byte", EncSize, ErrOpen},
		{"ciphertext first byte", 1 + EncSize, ErrOpen},
		{"ciphertext last byte", tagAt - 1, ErrOpen},
		{"tag first byte", tagAt, ErrOpen},
		{"tag last byte", len(s) - 1, ErrOpen},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, bit := range []byte{0x01, 0x80} {
				m := bytes.Clone(s)
				m[tc.at] ^= bit
				got, err := Open(k, m)
				if !errors.Is(err, tc.want) {
					t.Fatalf("flip 0x%02x at %d: err = %v, want %v", bit, tc.at, err, tc.want)
				}
				if got != nil {
					t.Fatal("returned plaintext for a tampered envelope")
				}
			}
		})
	}
	t.Run("truncated", func(t *testing.T) {
		if _, err := Open(k, s[:len(s)-1]); !errors.Is(err, ErrOpen) {
			t.Fatalf("err = %v, want ErrOpen", err)
		}
	})
	t.Run("extended", func(t *testing.T) {
		if _, err := Open(k, append(bytes.Clone(s), 0)); !errors.Is(err, ErrOpen) {
			t.Fatalf("err = %v, want ErrOpen", err)
		}
	})
	t.Run("swapped enc", func(t *testing.T) {
		other := mustSeal(t, k.Public(), pt)
		m := bytes.Clone(s)
		copy(m[1:1+EncSize], other[1:1+EncSize])
		if _, err := Open(k, m); !errors.Is(err, ErrOpen) {
			t.Fatalf("err = %v, want ErrOpen", err)
		}
	})
	if got, err := Open(k, s); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("original no longer opens: %v", err)
	}
}

func TestShortInputEveryLength(t *testing.T) {
	k := mustKey(t)
	s := mustSeal(t, k.Public(), nil)
	if len(s) != Overhead {
		t.Fatalf("empty plaintext sealed to %d bytes, want %d", len(s), Overhead)
	}
	for n := 0; n < Overhead; n++ {
		if _, err := Open(k, s[:n]); !errors.Is(err, ErrShort) {
			t.Fatalf("open %d bytes: err = %v, want ErrShort", n, err)
		}
	}
	if pt, err := Open(k, s); err != nil || len(pt) != 0 {
		t.Fatalf("open minimal envelope: %v", err)
	}
}

func TestUnknownVersion(t *testing.T) {
	k := mustKey(t)
	s := mustSeal(t, k.Public(), []byte("hi"))
	for _, v := range []byte{0x00, 0x02, 0x7f, 0xff} {
		m := bytes.Clone(s)
		m[0] = v
		if _, err := Open(k, m); !errors.Is(err, ErrVersion) {
			t.Fatalf("version 0x%02x: err = %v, want ErrVersion", v, err)
		}
		// A lone byte of an unknown version is reported as the version, not
		// as short: a future layout may be shorter.
		if _, err := Open(k, []byte{v}); !errors.Is(err, ErrVersion) {
			t.Fatalf("lone version 0x%02x: err = %v, want ErrVersion", v, err)
		}
	}
}

func TestLimits(t *testing.T) {
	k := mustKey(t)
	if _, err := Seal(k.Public(), make([]byte, MaxPlaintextSize+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("seal over the limit: err = %v, want ErrTooLarge", err)
	}
	big := make([]byte, MaxSealedSize+1)
	big[0] = Version
	if _, err := Open(k, big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("open over the limit: err = %v, want ErrTooLarge", err)
	}
}

func TestKeySerialization(t *testing.T) {
	k := mustKey(t)
	if n := len(k.Bytes()); n != PrivateKeySize {
		t.Fatalf("private key is %d bytes", n)
	}
	if n := len(k.Public().Bytes()); n != PublicKeySize {
		t.Fatalf("public key is %d bytes", n)
	}
	k2, err := ParsePrivateKey(k.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if !k2.Public().Equal(k.Public()) {
		t.Fatal("parsed private key has another public key")
	}
	pub, err := ParsePublicKey(k.Public().Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(k.Public()) {
		t.Fatal("parsed public key differs")
	}
	// An envelope sealed to the parsed public key opens with the parsed
	// private key.
	got, err := Open(k2, mustSeal(t, pub, []byte("x")))
	if err != nil || string(got) != "x" {
		t.Fatalf("open after reparse: %q, %v", got, err)
	}
	// Returned slices are copies.
	k.Bytes()[0] ^= 1
	k.Public().Bytes()[0] ^= 1
	if !bytes.Equal(k.Bytes(), k2.Bytes()) || !k.Public().Equal(k2.Public()) {
		t.Fatal("Bytes exposes internal state")
	}
}

func TestParsePublicKeyRejects(t *testing.T) {
	good := mustKey(t).Public().Bytes()
	// ML-KEM encapsulation key coefficients are 12-bit values mod q=3329;
	// 0xfff in the first coefficient is out of range.
	unreduced := bytes.Clone(good)
	unreduced[0], unreduced[1] = 0xff, unreduced[1]|0x0f
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"X25519 only", good[1184:]},
		{"one short", good[:PublicKeySize-1]},
		{"one long", append(bytes.Clone(good), 0)},
		{"ed25519-sized", make([]byte, 32)},
		{"unreduced ML-KEM coefficient", unreduced},
	} {
		if _, err := ParsePublicKey(tc.b); !errors.Is(err, ErrPublicKey) {
			t.Errorf("%s: err = %v, want ErrPublicKey", tc.name, err)
		}
	}
	var nilKey *PublicKey
	if mustKey(t).Public().Equal(nilKey) {
		t.Error("Equal(nil) = true")
	}
	if _, err := Seal(nil, []byte("x")); !errors.Is(err, ErrPublicKey) {
		t.Errorf("Seal to nil key: err = %v, want ErrPublicKey", err)
	}
	if _, err := Open(nil, make([]byte, Overhead)); !errors.Is(err, ErrPrivateKey) {
		t.Errorf("Open with nil key: err = %v, want ErrPrivateKey", err)
	}
}

func TestParsePrivateKeyRejects(t *testing.T) {
	for _, n := range []int{0, 31, 33, 64, 2400} {
		if _, err := ParsePrivateKey(make([]byte, n)); !errors.Is(err, ErrPrivateKey) {
			t.Errorf("%d bytes: err = %v, want ErrPrivateKey", n, err)
		}
	}
}

// hpkeVector is one entry of the draft-ietf-hpke-pq test vectors.
type hpkeVector struct {
	KEMID       uint16 `json:"kem_id"`
	KDFID       uint16 `json:"kdf_id"`
	AEADID      uint16 `json:"aead_id"`
	Info        string `json:"info"`
	SkRm        string `json:"skRm"`
	PkRm        string `json:"pkRm"`
	Enc         string `json:"enc"`
	Encryptions []struct {
		AAD string `json:"aad"`
		CT  string `json:"ct"`
		PT  string `json:"pt"`
	} `json:"encryptions"`
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPublishedVector checks our key serialization and suite against the
// published vector for exactly our ciphersuite: the 32-byte private key
// parses to the published public key, and with it the published
// encapsulation and every published encryption open.
func TestPublishedVector(t *testing.T) {
	raw, err := os.ReadFile("testdata/hpke-pq-xwing.json")
	if err != nil {
		t.Fatal(err)
	}
	var v hpkeVector
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	if v.KEMID != kem.ID() || v.KDFID != kdf.ID() || v.AEADID != aead.ID() {
		t.Fatalf("vector suite %#x/%#x/%#x is not ours", v.KEMID, v.KDFID, v.AEADID)
	}
	if kem.ID() != 0x647a || kdf.ID() != 0x0001 || aead.ID() != 0x0003 {
		t.Fatal("suite ids differ from the documented ones")
	}
	k, err := ParsePrivateKey(unhex(t, v.SkRm))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k.Public().Bytes(), unhex(t, v.PkRm)) {
		t.Fatal("published private key does not give the published public key")
	}
	if _, err := ParsePublicKey(unhex(t, v.PkRm)); err != nil {
		t.Fatal(err)
	}
	r, err := hpke.NewRecipient(unhex(t, v.Enc), k.k, kdf, aead, unhex(t, v.Info))
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range v.Encryptions {
		pt, err := r.Open(unhex(t, e.AAD), unhex(t, e.CT))
		if err != nil {
			t.Fatalf("encryption %d: %v", i, err)
		}
		if !bytes.Equal(pt, unhex(t, e.PT)) {
			t.Fatalf("encryption %d: plaintext differs", i)
		}
	}
	if len(v.Encryptions) == 0 {
		t.Fatal("vector has no encryptions")
	}
}

// golden is an envelope made once by this package (go test -run Golden
// -update) and kept, so that any change to the format or the suite breaks
// this test instead of silently breaking old messages and other clients.
type golden struct {
	PrivateKey string `json:"private_key"`
	PublicKey  string `json:"public_key"`
	Plaintext  string `json:"plaintext"`
	Sealed     string `json:"sealed"`
}

func TestGoldenEnvelope(t *testing.T) {
	const path = "testdata/envelope-v1.json"
	if *update {
		k := mustKey(t)
		pt := []byte("quicproquo seal v1 golden envelope")
		g := golden{
			PrivateKey: hex.EncodeToString(k.Bytes()),
			PublicKey:  hex.EncodeToString(k.Public().Bytes()),
			Plaintext:  string(pt),
			Sealed:     hex.EncodeToString(mustSeal(t, k.Public(), pt)),
		}
		b, _ := json.MarshalIndent(g, "", " ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	g := loadGolden(t)
	k, err := ParsePrivateKey(unhex(t, g.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k.Public().Bytes(), unhex(t, g.PublicKey)) {
		t.Fatal("golden private key gives another public key")
	}
	pt, err := Open(k, unhex(t, g.Sealed))
	if err != nil {
		t.Fatal(err)
	}
	if string(pt) != g.Plaintext {
		t.Fatalf("golden envelope opened to %q", pt)
	}
}

func loadGolden(t testing.TB) golden {
	raw, err := os.ReadFile("testdata/envelope-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	return g
}

// FuzzOpen: Open on arbitrary bytes never panics, never changes its input,
// fails with one of the documented errors and no plaintext, and whatever it
// accepts has exactly the documented overhead. (Sealing is randomized, so
// there is no canonical re-encoding to compare with.)
func FuzzOpen(f *testing.F) {
	g := loadGolden(f)
	kb, _ := hex.DecodeString(g.PrivateKey)
	k, err := ParsePrivateKey(kb)
	if err != nil {
		f.Fatal(err)
	}
	sealed, _ := hex.DecodeString(g.Sealed)
	f.Add(sealed)
	f.Add(sealed[:Overhead])
	f.Add(sealed[:Overhead-1])
	f.Add([]byte{})
	f.Add([]byte{Version})
	f.Add([]byte{0x02})
	empty := mustSeal(f, k.Public(), nil)
	f.Add(empty)
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		pt, err := Open(k, b)
		if !bytes.Equal(in, b) {
			t.Fatal("Open modified its input")
		}
		if err != nil {
			if pt != nil {
				t.Fatal("plaintext returned with an error")
			}
			if !errors.Is(err, ErrShort) && !errors.Is(err, ErrVersion) &&
				!errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrOpen) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if len(pt) != len(b)-Overhead {
			t.Fatalf("plaintext of %d bytes from %d-byte envelope", len(pt), len(b))
		}
	})
}

func BenchmarkSeal1KiB(b *testing.B) {
	k := mustKey(b)
	pt := make([]byte, 1024)
	b.SetBytes(int64(len(pt)))
	for b.Loop() {
		if _, err := Seal(k.Public(), pt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen1KiB(b *testing.B) {
	k := mustKey(b)
	s := mustSeal(b, k.Public(), make([]byte, 1024))
	b.SetBytes(1024)
	for b.Loop() {
		if _, err := Open(k, s); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkChaCha20Poly1305Baseline1KiB is the bare baseline: the AEAD alone on the
// same payload, so the KEM's share of Seal/Open is visible in one run.
func BenchmarkChaCha20Poly1305Baseline1KiB(b *testing.B) {
	k := mustKey(b)
	enc, s, err := hpke.NewSender(k.Public().k, kdf, aead, []byte(Info))
	if err != nil || len(enc) != EncSize {
		b.Fatal(err)
	}
	pt := make([]byte, 1024)
	b.SetBytes(1024)
	for b.Loop() {
		if _, err := s.Seal(nil, pt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGenerateKey(b *testing.B) {
	for b.Loop() {
		if _, err := GenerateKey(); err != nil {
			b.Fatal(err)
		}
	}
}
