// Package ed25519vk verifies Ed25519 signatures (RFC 8032) under a public
// key parsed once, with exactly the answers of crypto/ed25519.Verify, in
// about two thirds of its time.
//
// crypto/ed25519 decodes the key, a field square root, on every call and
// computes R' = [S]B + [k](-A) in one pass of 253 doublings. A parsed key
// keeps the decoded point and what a pass of half the length needs: each
// scalar is split at bit 128, s = s0 + 2^128 s1, and
//
//	R' = [S0]B + [S1]B' + [k0](-A) + [k1](-A'),  B' = [2^128]B, A' = [2^128]A,
//
// is summed in one pass of 129 doublings over the width-w NAF digits of
// the four half-size scalars, with tables of odd multiples of -A and -A'
// kept with the key and of B and B' built once per process. The sum is
// the same group element for every point, small-order components
// included, so the check stays Go's cofactorless one.
//
// The point formulas are those of Hisil, Wong, Carter and Dawson, "Twisted
// Edwards Curves Revisited" (2008), for a = -1, over the field arithmetic
// of filippo.io/edwards25519/field; decoding, the scalars and the hash are
// filippo.io/edwards25519 and crypto/sha512, as in crypto/ed25519. All of
// it is variable-time, which verification may be: its inputs are public.
package ed25519vk

import (
	"bytes"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"math/bits"
	"sync"

	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"
)

// Sizes of the encodings.
const (
	PublicKeySize = 32
	SignatureSize = 64
)

// ErrKey reports a public key that is not the encoding of a curve point.
var ErrKey = errors.New("ed25519vk: invalid public key")

// Window widths of the NAF digits: w = 5 for the key (tables of 8 odd
// multiples, 2.5 KiB per key), w = 8 for the base point (64 multiples,
// shared).
const (
	keyWindow  = 5
	baseWindow = 8
)

// PublicKey is a parsed Ed25519 public key. It is immutable and safe for
// concurrent use.
type PublicKey struct {
	enc [PublicKeySize]byte
	// Odd multiples [1, 3, ..., 15] of -A and of -A' = [2^128](-A).
	negA, negA128 [1 << (keyWindow - 2)]cachedPoint
}

// NewPublicKey parses pub as crypto/ed25519 does (edwards25519's SetBytes,
// the code crypto/ed25519 runs: non-canonical encodings of y are read mod
// p) and precomputes its tables.
func NewPublicKey(pub []byte) (*PublicKey, error) {
	if len(pub) != PublicKeySize {
		return nil, ErrKey
	}
	a, err := new(edwards25519.Point).SetBytes(pub)
	if err != nil {
		return nil, ErrKey
	}
	k := &PublicKey{enc: [PublicKeySize]byte(pub)}
	var p extPoint
	p.fromPoint(new(edwards25519.Point).Negate(a))
	oddMultiples(k.negA[:], &p)
	p.double128()
	oddMultiples(k.negA128[:], &p)
	return k, nil
}

// Bytes returns the encoding the key was parsed from.
func (k *PublicKey) Bytes() []byte { return bytes.Clone(k.enc[:]) }

// Verify reports whether sig is a valid signature of msg under k, with
// crypto/ed25519.Verify's rules: S must be canonical (S < L), k =
// SHA-512(R || A || M) mod L with A as encoded, and the encoding of
// [S]B - [k]A must be exactly R.
func (k *PublicKey) Verify(msg, sig []byte) bool {
	if len(sig) != SignatureSize || sig[63]&0xe0 != 0 {
		return false
	}
	s, err := edwards25519.NewScalar().SetCanonicalBytes(sig[32:])
	if err != nil {
		return false
	}
	h := sha512.New()
	h.Write(sig[:32])
	h.Write(k.enc[:])
	h.Write(msg)
	var digest [sha512.Size]byte
	c, err := edwards25519.NewScalar().SetUniformBytes(h.Sum(digest[:0]))
	if err != nil {
		panic("ed25519vk: " + err.Error()) // 64 bytes are always accepted
	}
	r := k.combination(c, s)
	return bytes.Equal(sig[:32], r[:])
}

// combination returns the encoding of [s]B + [c](-A).
func (k *PublicKey) combination(c, s *edwards25519.Scalar) [32]byte {
	base := baseTables()
	tables := [4][]cachedPoint{k.negA[:], k.negA128[:], base[0][:], base[1][:]}
	var digits [4][130]int8
	cb, sb := c.Bytes(), s.Bytes()
	naf(&digits[0], cb[0:16], keyWindow)
	naf(&digits[1], cb[16:32], keyWindow)
	naf(&digits[2], sb[0:16], baseWindow)
	naf(&digits[3], sb[16:32], baseWindow)
	top := len(digits[0]) - 1
	for top >= 0 && digits[0][top]|digits[1][top]|digits[2][top]|digits[3][top] == 0 {
		top--
	}
	var acc projPoint
	acc.zero()
	var t completedPoint
	var u extPoint
	for i := top; i >= 0; i-- {
		t.double(&acc)
		for j, tab := range tables {
			d := digits[j][i]
			if d == 0 {
				continue
			}
			u.fromCompleted(&t)
			if d > 0 {
				t.add(&u, &tab[d/2], false)
			} else {
				t.add(&u, &tab[-d/2], true)
			}
		}
		acc.fromCompleted(&t)
	}
	return acc.encode()
}

// naf writes the width-w non-adjacent form of the 128-bit little-endian
// number n: digits
// d_i, each zero or odd with |d_i| < 2^(w-1), with n = sum d_i 2^i and
// at most one non-zero digit in any w consecutive ones. n < 2^128 takes
// at most 129 digits.
func naf(out *[130]int8, n []byte, w uint) {
	n0, n1, n2 := binary.LittleEndian.Uint64(n), binary.LittleEndian.Uint64(n[8:]), uint64(0)
	for i := 0; n0|n1|n2 != 0; i++ {
		if n0&1 == 1 {
			d := int64(n0 & (1<<w - 1))
			if d >= 1<<(w-1) {
				d -= 1 << w
			}
			out[i] = int8(d)
			// n -= d, which leaves n divisible by 2^w.
			var c uint64
			if d > 0 {
				n0, c = bits.Sub64(n0, uint64(d), 0)
				n1, c = bits.Sub64(n1, 0, c)
				n2, _ = bits.Sub64(n2, 0, c)
			} else {
				n0, c = bits.Add64(n0, uint64(-d), 0)
				n1, c = bits.Add64(n1, 0, c)
				n2 += c
			}
		}
		n0 = n0>>1 | n1<<63
		n1 = n1>>1 | n2<<63
		n2 >>= 1
	}
}

// baseTables returns the odd multiples [1, 3, ..., 127] of B and of
// B' = [2^128]B.
var baseTables = sync.OnceValue(func() *[2][1 << (baseWindow - 2)]cachedPoint {
	var t [2][1 << (baseWindow - 2)]cachedPoint
	var b extPoint
	b.fromPoint(edwards25519.NewGeneratorPoint())
	oddMultiples(t[0][:], &b)
	b.double128()
	oddMultiples(t[1][:], &b)
	return &t
})

// The curve constant d = -121665/121666 and 2d.
var d2 = func() *field.Element {
	num, den := small(121665), small(121666)
	d := new(field.Element).Multiply(new(field.Element).Negate(num), new(field.Element).Invert(den))
	return d.Add(d, d)
}()

func small(n uint32) *field.Element {
	var b [32]byte
	binary.LittleEndian.PutUint32(b[:], n)
	e, err := new(field.Element).SetBytes(b[:])
	if err != nil {
		panic(err)
	}
	return e
}

// Point representations (HWCD 2008): extended (X:Y:Z:T) with x = X/Z,
// y = Y/Z, xy = T/Z; projective (X:Y:Z); completed ((X:Z), (Y:T)) with
// x = X/Z, y = Y/T, what additions and doublings produce; cached, a point
// prepared to be added: (Y+X, Y-X, Z, 2dT).
type (
	extPoint       struct{ X, Y, Z, T field.Element }
	projPoint      struct{ X, Y, Z field.Element }
	completedPoint struct{ X, Y, Z, T field.Element }
	cachedPoint    struct{ YplusX, YminusX, Z, T2d field.Element }
)

func (p *extPoint) fromPoint(q *edwards25519.Point) {
	X, Y, Z, T := q.ExtendedCoordinates()
	p.X, p.Y, p.Z, p.T = *X, *Y, *Z, *T
}

func (p *extPoint) fromCompleted(c *completedPoint) {
	p.X.Multiply(&c.X, &c.T)
	p.Y.Multiply(&c.Y, &c.Z)
	p.Z.Multiply(&c.Z, &c.T)
	p.T.Multiply(&c.X, &c.Y)
}

// double128 sets p = [2^128]p.
func (p *extPoint) double128() {
	var q projPoint
	var c completedPoint
	q.X, q.Y, q.Z = p.X, p.Y, p.Z
	for i := range 128 {
		c.double(&q)
		if i < 127 {
			q.fromCompleted(&c)
		}
	}
	p.fromCompleted(&c)
}

func (p *projPoint) zero() {
	p.X.Zero()
	p.Y.One()
	p.Z.One()
}

func (p *projPoint) fromCompleted(c *completedPoint) {
	p.X.Multiply(&c.X, &c.T)
	p.Y.Multiply(&c.Y, &c.Z)
	p.Z.Multiply(&c.Z, &c.T)
}

// encode returns the RFC 8032 encoding of p: y, and the sign of x in the
// top bit.
func (p *projPoint) encode() [32]byte {
	var zInv, x, y field.Element
	zInv.Invert(&p.Z)
	x.Multiply(&p.X, &zInv)
	y.Multiply(&p.Y, &zInv)
	out := [32]byte(y.Bytes())
	out[31] |= byte(x.IsNegative() << 7)
	return out
}

func (p *cachedPoint) fromExt(q *extPoint) {
	p.YplusX.Add(&q.Y, &q.X)
	p.YminusX.Subtract(&q.Y, &q.X)
	p.Z.Set(&q.Z)
	p.T2d.Multiply(&q.T, d2)
}

// double sets c = 2p (dbl-2008-hwcd with a = -1; Y and T both negated,
// which leaves y = Y/T as it is).
func (c *completedPoint) double(p *projPoint) {
	var xx, yy, zz2, xPlusYSq field.Element
	xx.Square(&p.X)
	yy.Square(&p.Y)
	zz2.Square(&p.Z)
	zz2.Add(&zz2, &zz2)
	xPlusYSq.Add(&p.X, &p.Y)
	xPlusYSq.Square(&xPlusYSq)
	c.Y.Add(&yy, &xx)
	c.Z.Subtract(&yy, &xx)
	c.X.Subtract(&xPlusYSq, &c.Y)
	c.T.Subtract(&zz2, &c.Z)
}

// add sets c = p + q (add-2008-hwcd-3 with k = 2d), or c = p - q when neg
// is set: -q is (Y-X, Y+X, Z, -2dT).
func (c *completedPoint) add(p *extPoint, q *cachedPoint, neg bool) {
	qPlus, qMinus := &q.YplusX, &q.YminusX
	if neg {
		qPlus, qMinus = qMinus, qPlus
	}
	var yPlusX, yMinusX, pp, mm, tt2d, zz2 field.Element
	yPlusX.Add(&p.Y, &p.X)
	yMinusX.Subtract(&p.Y, &p.X)
	pp.Multiply(&yPlusX, qPlus)
	mm.Multiply(&yMinusX, qMinus)
	tt2d.Multiply(&p.T, &q.T2d)
	zz2.Multiply(&p.Z, &q.Z)
	zz2.Add(&zz2, &zz2)
	c.X.Subtract(&pp, &mm)
	c.Y.Add(&pp, &mm)
	if neg {
		c.Z.Subtract(&zz2, &tt2d)
		c.T.Add(&zz2, &tt2d)
	} else {
		c.Z.Add(&zz2, &tt2d)
		c.T.Subtract(&zz2, &tt2d)
	}
}

// oddMultiples fills t with p, 3p, 5p, ...
func oddMultiples(t []cachedPoint, p *extPoint) {
	var q projPoint
	var c completedPoint
	var p2, cur extPoint
	q.X, q.Y, q.Z = p.X, p.Y, p.Z
	c.double(&q)
	p2.fromCompleted(&c)
	var p2c cachedPoint
	p2c.fromExt(&p2)
	cur = *p
	t[0].fromExt(&cur)
	for i := 1; i < len(t); i++ {
		c.add(&cur, &p2c, false)
		cur.fromCompleted(&c)
		t[i].fromExt(&cur)
	}
}
