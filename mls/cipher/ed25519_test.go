package cipher

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"testing"

	"filippo.io/edwards25519"

	"github.com/quicproquo/qpq/mls/internal/testvec"
)

// A parsed Ed25519 key (ed25519Key, internal/ed25519vk) verifies in its own
// way, Suite.Verify through crypto/ed25519; these tests hold both to
// exactly the answers of crypto/ed25519.Verify.

// TestEd25519RFC8032 checks the test vectors of RFC 8032 §7.1 (TEST 1, 2,
// 3 and SHA(abc)): the public key and signature crypto/ed25519 derives
// from the seed are the published ones, the suite verifies them, and
// rejects them with any bit of the signature or message flipped.
func TestEd25519RFC8032(t *testing.T) {
	var vectors []struct {
		Name                string
		Seed, Pub, Msg, Sig testvec.Hex
	}
	abc := sha512.Sum512([]byte("abc"))
	if err := json.Unmarshal([]byte(`[
		{"name": "TEST 1",
		 "seed": "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
		 "pub": "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "msg": "",
		 "sig": "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"},
		{"name": "TEST 2",
		 "seed": "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
		 "pub": "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "msg": "72",
		 "sig": "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"},
		{"name": "TEST 3",
		 "seed": "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
		 "pub": "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "msg": "af82",
		 "sig": "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"},
		{"name": "TEST SHA(abc)",
		 "seed": "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
		 "pub": "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf", "msg": "`+hex.EncodeToString(abc[:])+`",
		 "sig": "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704"}
	]`), &vectors); err != nil {
		t.Fatal(err)
	}
	for _, v := range vectors {
		t.Run(v.Name, func(t *testing.T) {
			seed, pub, msg, sig := []byte(v.Seed), []byte(v.Pub), []byte(v.Msg), []byte(v.Sig)
			priv := ed25519.NewKeyFromSeed(seed)
			if !bytes.Equal(priv[32:], pub) || !bytes.Equal(ed25519.Sign(priv, msg), sig) {
				t.Fatal("vector does not match crypto/ed25519")
			}
			s, _ := Lookup(X25519_AES128GCM_SHA256_Ed25519)
			if err := s.Verify(pub, msg, sig); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			for i := range len(sig) * 8 {
				bad := bytes.Clone(sig)
				bad[i/8] ^= 1 << (i % 8)
				if err := s.Verify(pub, msg, bad); !errors.Is(err, ErrSignature) {
					t.Fatalf("signature bit %d flipped: err = %v", i, err)
				}
			}
			for i := range len(msg) * 8 {
				bad := bytes.Clone(msg)
				bad[i/8] ^= 1 << (i % 8)
				if err := s.Verify(pub, bad, sig); !errors.Is(err, ErrSignature) {
					t.Fatalf("message bit %d flipped: err = %v", i, err)
				}
			}
		})
	}
}

// TestEd25519MatchesStdlib compares the suite's Ed25519 verification with
// crypto/ed25519.Verify on keys and signatures built to sit on every edge
// of the check: keys with a small-order component (where a cofactored
// check would differ), the small-order points themselves, every
// non-canonical encoding of y (which crypto/ed25519 accepts) with either
// sign bit, encodings that are no point, random bytes; signatures
// honestly made for those keys (that Go's cofactorless check accepts only
// when [k] kills the key's torsion), with a torsion point added to R, R
// encoded non-canonically, S + L, S = L, S with its top bits set, and
// single bit flips. Both must accept and reject the same inputs, and the
// constructed cases must include acceptances under small-order keys and
// rejections of honest-looking signatures, or the test proves nothing.
func TestEd25519MatchesStdlib(t *testing.T) {
	var accepted, torsionAccepted, rejected int
	for _, c := range ed25519EdgeCases(t, rand.NewChaCha8([32]byte{'q', 'p', 'q'})) {
		ok := checkEd25519(t, c.pub, c.msg, c.sig)
		switch {
		case ok && c.torsion:
			torsionAccepted++
			fallthrough
		case ok:
			accepted++
		default:
			rejected++
		}
	}
	t.Logf("%d accepted (%d under keys with a small-order component), %d rejected", accepted, torsionAccepted, rejected)
	if torsionAccepted == 0 || accepted < 20 || rejected < 100 {
		t.Fatal("the edge cases no longer reach both outcomes")
	}
}

// FuzzEd25519Verify checks that the suite's Ed25519 verification, through
// Suite.Verify and through a parsed key, accepts exactly what
// crypto/ed25519.Verify accepts. The seeds are the RFC 8032 vectors and
// the edge cases of TestEd25519MatchesStdlib.
func FuzzEd25519Verify(f *testing.F) {
	for _, c := range ed25519EdgeCases(f, rand.NewChaCha8([32]byte{'f', 'u', 'z', 'z'})) {
		f.Add(c.pub, c.msg, c.sig)
	}
	f.Add([]byte{}, []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, pub, msg, sig []byte) {
		checkEd25519(t, pub, msg, sig)
	})
}

// checkEd25519 fails t unless the suite's answers for (pub, msg, sig)
// are crypto/ed25519's, and returns whether it accepted.
func checkEd25519(t testing.TB, pub, msg, sig []byte) bool {
	t.Helper()
	s, _ := Lookup(X25519_AES128GCM_SHA256_Ed25519)
	err := s.Verify(pub, msg, sig)
	if err != nil && !errors.Is(err, ErrKey) && !errors.Is(err, ErrSignature) {
		t.Fatalf("Verify: %v", err)
	}
	k, perr := s.ParseVerificationKey(pub)
	if len(pub) != ed25519.PublicKeySize {
		// crypto/ed25519 panics on a key of the wrong size.
		if !errors.Is(err, ErrKey) || !errors.Is(perr, ErrKey) {
			t.Fatalf("key of %d bytes: Verify %v, ParseVerificationKey %v", len(pub), err, perr)
		}
		return false
	}
	want := ed25519.Verify(pub, msg, sig)
	if (err == nil) != want {
		t.Fatalf("Verify(%x, %x, %x) = %v, crypto/ed25519 says %v", pub, msg, sig, err, want)
	}
	if perr != nil {
		if want || !errors.Is(perr, ErrKey) || !errors.Is(err, ErrKey) {
			t.Fatalf("ParseVerificationKey(%x): %v (Verify %v, crypto/ed25519 %v)", pub, perr, err, want)
		}
		return false
	}
	if kerr := k.Verify(msg, sig); (kerr == nil) != want || kerr != nil && !errors.Is(kerr, ErrSignature) {
		t.Fatalf("parsed key %x: Verify(%x, %x) = %v, crypto/ed25519 says %v", pub, msg, sig, kerr, want)
	}
	return want
}

type ed25519Case struct {
	pub, msg, sig []byte
	torsion       bool // pub has a small-order component
}

// groupOrder is L = 2^252 + 27742317777372353535851937790883648493,
// little-endian.
var groupOrder = [32]byte{
	0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
	31: 0x10,
}

// fieldPrime is p = 2^255 - 19, little-endian.
var fieldPrime = func() (p [32]byte) {
	for i := range p {
		p[i] = 0xff
	}
	p[0], p[31] = 0xed, 0x7f
	return p
}()

// ed25519EdgeCases builds the inputs described at TestEd25519MatchesStdlib.
func ed25519EdgeCases(t testing.TB, rng *rand.ChaCha8) []ed25519Case {
	t.Helper()
	torsion := smallOrderPoints(t, rng)

	// Keys as (encoding, secret scalar, small-order component) where the
	// decomposition is known, so signatures can be made for them.
	type key struct {
		enc     []byte
		a       *edwards25519.Scalar
		torsion *edwards25519.Point // nil: none
	}
	var keys []key
	var unsignable [][]byte
	for range 2 {
		a := randomScalar(rng)
		keys = append(keys, key{enc: new(edwards25519.Point).ScalarBaseMult(a).Bytes(), a: a})
	}
	for i, tp := range torsion {
		a := randomScalar(rng)
		mixed := new(edwards25519.Point).Add(new(edwards25519.Point).ScalarBaseMult(a), tp)
		keys = append(keys, key{enc: mixed.Bytes(), a: a, torsion: tp})
		if i > 0 {
			keys = append(keys, key{enc: tp.Bytes(), a: edwards25519.NewScalar(), torsion: tp})
		}
	}
	// Every encoding with y >= p (crypto/ed25519 reads y mod p), and y of
	// 0, 1 and p-1 with the sign bit set (x = 0, so no such point).
	var odd [][]byte
	for y := range 19 {
		enc := fieldPrime
		enc[0] += byte(y)
		odd = append(odd, bytes.Clone(enc[:]))
		enc[31] |= 0x80
		odd = append(odd, bytes.Clone(enc[:]))
	}
	minus1 := fieldPrime
	minus1[0]--
	odd = append(odd, append(make([]byte, 31), 0x80), append([]byte{1}, append(make([]byte, 30), 0x80)...))
	minus1[31] |= 0x80
	odd = append(odd, minus1[:])
	for range 8 {
		b := make([]byte, 32)
		rng.Read(b)
		odd = append(odd, b)
	}
	for _, enc := range odd {
		p, err := new(edwards25519.Point).SetBytes(enc)
		if err != nil {
			unsignable = append(unsignable, enc)
			continue
		}
		k := key{enc: enc, a: edwards25519.NewScalar()}
		for _, tp := range torsion {
			if p.Equal(tp) == 1 {
				k.torsion = tp
			}
		}
		if k.torsion == nil {
			unsignable = append(unsignable, enc) // a point of unknown log: random signatures only
			continue
		}
		keys = append(keys, k)
	}

	var cases []ed25519Case
	msg := func() []byte {
		m := make([]byte, intN(rng, 80))
		rng.Read(m)
		return m
	}
	for _, k := range keys {
		isTorsion := k.torsion != nil && k.torsion.Equal(edwards25519.NewIdentityPoint()) == 0
		for i := range 10 {
			m := msg()
			r := randomScalar(rng)
			R := new(edwards25519.Point).ScalarBaseMult(r)
			if i >= 8 {
				// R with a small-order point added.
				R.Add(R, torsion[intN(rng, len(torsion))])
			}
			rEnc := R.Bytes()
			h := sha512.New()
			h.Write(rEnc)
			h.Write(k.enc)
			h.Write(m)
			c, _ := edwards25519.NewScalar().SetUniformBytes(h.Sum(nil))
			S := edwards25519.NewScalar().MultiplyAdd(c, k.a, r)
			sig := append(bytes.Clone(rEnc), S.Bytes()...)
			cases = append(cases, ed25519Case{k.enc, m, sig, isTorsion})

			// The same with S + L, which is S again mod L.
			cases = append(cases, ed25519Case{k.enc, m, append(bytes.Clone(rEnc), addLE(S.Bytes(), groupOrder[:])...), isTorsion})
			// A single bit flipped anywhere.
			bad := bytes.Clone(sig)
			bit := intN(rng, len(bad)*8)
			bad[bit/8] ^= 1 << (bit % 8)
			cases = append(cases, ed25519Case{k.enc, m, bad, isTorsion})
		}
		// S = L, S with the top bits set, R of a small-order point (with
		// S = 0: for a small-order key with [k]A = -R this verifies)
		// written canonically and, for y of 0 or 1, non-canonically.
		m := msg()
		sig := make([]byte, 64)
		rng.Read(sig[:32])
		copy(sig[32:], groupOrder[:])
		cases = append(cases, ed25519Case{k.enc, m, bytes.Clone(sig), isTorsion})
		sig[63] |= 0xe0
		cases = append(cases, ed25519Case{k.enc, m, bytes.Clone(sig), isTorsion})
		for _, tp := range torsion {
			for _, rEnc := range [][]byte{tp.Bytes(), nonCanonical(tp.Bytes())} {
				if rEnc != nil {
					cases = append(cases, ed25519Case{k.enc, m, append(rEnc, make([]byte, 32)...), isTorsion})
				}
			}
		}
	}
	for _, enc := range unsignable {
		sig := make([]byte, 64)
		rng.Read(sig)
		cases = append(cases, ed25519Case{pub: enc, msg: msg(), sig: sig})
	}
	return cases
}

// smallOrderPoints returns the eight points of order dividing 8, the
// identity first: the multiples of [L]P for a point P with a component
// of order 8.
func smallOrderPoints(t testing.TB, rng *rand.ChaCha8) []*edwards25519.Point {
	t.Helper()
	lMinus1 := groupOrder
	lMinus1[0]--
	l1, err := edwards25519.NewScalar().SetCanonicalBytes(lMinus1[:])
	if err != nil {
		t.Fatal(err)
	}
	for {
		enc := make([]byte, 32)
		rng.Read(enc)
		p, err := new(edwards25519.Point).SetBytes(enc)
		if err != nil {
			continue
		}
		t8 := new(edwards25519.Point).ScalarMult(l1, p)
		t8.Add(t8, p) // [L]P
		t4 := new(edwards25519.Point).Add(t8, t8)
		t2 := new(edwards25519.Point).Add(t4, t4)
		if t2.Equal(edwards25519.NewIdentityPoint()) == 1 {
			continue // not of order 8
		}
		points := []*edwards25519.Point{edwards25519.NewIdentityPoint()}
		for range 7 {
			points = append(points, new(edwards25519.Point).Add(points[len(points)-1], t8))
		}
		return points
	}
}

// nonCanonical returns the encoding of the same point with y + p, when
// y + p < 2^255; nil otherwise.
func nonCanonical(enc []byte) []byte {
	y := bytes.Clone(enc)
	y[31] &= 0x7f
	sum := addLE(y, fieldPrime[:])
	if sum[31]&0x80 != 0 {
		return nil
	}
	sum[31] |= enc[31] & 0x80
	return sum
}

// addLE adds two 32-byte little-endian numbers modulo 2^256.
func addLE(a, b []byte) []byte {
	out := make([]byte, 32)
	carry := 0
	for i := range 32 {
		s := int(a[i]) + int(b[i]) + carry
		out[i], carry = byte(s), s>>8
	}
	return out
}

func intN(rng *rand.ChaCha8, n int) int { return int(rng.Uint64() % uint64(n)) }

func randomScalar(rng *rand.ChaCha8) *edwards25519.Scalar {
	var b [64]byte
	rng.Read(b[:])
	s, _ := edwards25519.NewScalar().SetUniformBytes(b[:])
	return s
}
