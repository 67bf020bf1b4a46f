package ed25519vk

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"math/big"
	"math/rand/v2"
	"testing"

	"filippo.io/edwards25519"
)

// The verification as a whole is held to crypto/ed25519.Verify by the
// tests of mls/cipher (RFC 8032 vectors, edge cases, a fuzz target); these
// test the parts.

// TestNAF checks the digits of naf against their definition, for random
// numbers and the edges of the 128-bit range.
func TestNAF(t *testing.T) {
	rng := rand.NewChaCha8([32]byte{'n', 'a', 'f'})
	edges := [][2]uint64{{0, 0}, {1, 0}, {^uint64(0), 0}, {0, 1}, {^uint64(0), ^uint64(0)}, {0, 1 << 63}, {1<<63 - 1, ^uint64(0)}}
	for range 2000 {
		edges = append(edges, [2]uint64{rng.Uint64(), rng.Uint64()})
	}
	for _, w := range []uint{keyWindow, baseWindow} {
		for _, n := range edges {
			var b [16]byte
			binary.LittleEndian.PutUint64(b[:], n[0])
			binary.LittleEndian.PutUint64(b[8:], n[1])
			var d [130]int8
			naf(&d, b[:], w)
			sum, last := new(big.Int), -1
			for i := len(d) - 1; i >= 0; i-- {
				if v := int(d[i]); v != 0 {
					if v%2 == 0 || v >= 1<<(w-1) || v <= -(1<<(w-1)) {
						t.Fatalf("w=%d n=%x: digit %d = %d", w, n, i, v)
					}
					if last >= 0 && last-i < int(w) {
						t.Fatalf("w=%d n=%x: non-zero digits %d and %d", w, n, last, i)
					}
					last = i
				}
				sum.Lsh(sum, 1).Add(sum, big.NewInt(int64(d[i])))
			}
			want := new(big.Int).SetBytes(reverse(b[:]))
			if sum.Cmp(want) != 0 || d[129] != 0 {
				t.Fatalf("w=%d n=%x: digits sum to %x", w, n, sum)
			}
		}
	}
}

// TestCombination checks [s]B + [c](-A) against edwards25519's
// VarTimeDoubleScalarBaseMult, for keys with and without a small-order
// component and scalars at the edges of the split at bit 128.
func TestCombination(t *testing.T) {
	rng := rand.NewChaCha8([32]byte{'c', 'o', 'm', 'b'})
	var scalars []*edwards25519.Scalar
	for _, e := range []string{"0", "1", "2", "340282366920938463463374607431768211455" /* 2^128-1 */, "340282366920938463463374607431768211456",
		"170141183460469231731687303715884105728" /* 2^127 */, "7237005577332262213973186563042994240857116359379907606001950938285454250988", /* L-1 */
		"7237005577332262213973186563042994240829374041602535252466099000494570602496" /* 2^252 */} {
		n, _ := new(big.Int).SetString(e, 10)
		b := make([]byte, 32)
		n.FillBytes(b)
		s, err := edwards25519.NewScalar().SetCanonicalBytes(reverse(b))
		if err != nil {
			t.Fatalf("%s: %v", e, err)
		}
		scalars = append(scalars, s)
	}
	for range 20 {
		scalars = append(scalars, randomScalar(rng))
	}
	var keys []*edwards25519.Point
	for len(keys) < 12 {
		// Random encodings: about 1 in 8 valid points lies in the
		// prime-order subgroup, the others have a small-order component.
		b := make([]byte, 32)
		rng.Read(b)
		if p, err := new(edwards25519.Point).SetBytes(b); err == nil {
			keys = append(keys, p)
		}
	}
	keys = append(keys, edwards25519.NewIdentityPoint(), edwards25519.NewGeneratorPoint())
	for ki, a := range keys {
		k, err := NewPublicKey(a.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		minusA := new(edwards25519.Point).Negate(a)
		for i, c := range scalars {
			s := scalars[(i+ki)%len(scalars)]
			want := new(edwards25519.Point).VarTimeDoubleScalarBaseMult(c, minusA, s).Bytes()
			if got := k.combination(c, s); !bytes.Equal(got[:], want) {
				t.Fatalf("key %x, c %x, s %x: %x, want %x", a.Bytes(), c.Bytes(), s.Bytes(), got, want)
			}
		}
	}
}

func TestVerify(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	msg := []byte("message")
	sig := ed25519.Sign(priv, msg)
	k, err := NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k.Bytes(), pub) || !k.Verify(msg, sig) || k.Verify(msg[1:], sig) || k.Verify(msg, sig[1:]) {
		t.Fatal("verification under a parsed key")
	}
	if _, err := NewPublicKey(pub[1:]); err != ErrKey {
		t.Fatalf("short key: %v", err)
	}
}

func BenchmarkVerify(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	msg := make([]byte, 1100)
	sig := ed25519.Sign(priv, msg)
	k, _ := NewPublicKey(pub)
	b.Run("parsed", func(b *testing.B) {
		for b.Loop() {
			if !k.Verify(msg, sig) {
				b.Fatal("rejected")
			}
		}
	})
	b.Run("crypto-ed25519", func(b *testing.B) {
		for b.Loop() {
			if !ed25519.Verify(pub, msg, sig) {
				b.Fatal("rejected")
			}
		}
	})
	b.Run("parse", func(b *testing.B) {
		for b.Loop() {
			if _, err := NewPublicKey(pub); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func reverse(b []byte) []byte {
	r := make([]byte, len(b))
	for i := range b {
		r[len(b)-1-i] = b[i]
	}
	return r
}

func randomScalar(rng *rand.ChaCha8) *edwards25519.Scalar {
	var b [64]byte
	rng.Read(b[:])
	s, _ := edwards25519.NewScalar().SetUniformBytes(b[:])
	return s
}
