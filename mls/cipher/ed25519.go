package cipher

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha512"
	"fmt"

	"filippo.io/edwards25519"
)

// ed25519Scheme is pure Ed25519 (RFC 8032); private keys are 32-byte seeds.
type ed25519Scheme struct{}

var _ sigScheme = ed25519Scheme{}

type ed25519Signer struct{ key ed25519.PrivateKey }

var _ Signer = ed25519Signer{}

func (ed25519Scheme) generate() (Signer, error) {
	_, k, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	return ed25519Signer{k}, nil
}

func (ed25519Scheme) load(priv []byte) (Signer, error) {
	if len(priv) != ed25519.SeedSize {
		return nil, fmt.Errorf("%w: Ed25519 private key of %d bytes", ErrKey, len(priv))
	}
	return ed25519Signer{ed25519.NewKeyFromSeed(priv)}, nil
}

func (s ed25519Signer) Sign(msg []byte) ([]byte, error) { return ed25519.Sign(s.key, msg), nil }
func (s ed25519Signer) Public() []byte                  { return append([]byte(nil), s.key[32:]...) }
func (s ed25519Signer) Bytes() []byte                   { return s.key.Seed() }

// ed25519Key is an Ed25519 public key with its point decompressed (and
// negated, as the verification equation uses it) once. crypto/ed25519
// decodes the point, a field square root, on every Verify; a group member
// whose messages are checked over and over keeps it here instead.
type ed25519Key struct {
	enc  [ed25519.PublicKeySize]byte
	negA edwards25519.Point
}

var _ VerificationKey = (*ed25519Key)(nil)

// parse decodes pub as crypto/ed25519 does: any encoding that
// edwards25519's SetBytes accepts (which is the same code crypto/ed25519
// runs, non-canonical y included), nothing else.
func (ed25519Scheme) parse(pub []byte) (VerificationKey, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: Ed25519 public key of %d bytes", ErrKey, len(pub))
	}
	k := &ed25519Key{enc: [ed25519.PublicKeySize]byte(pub)}
	var a edwards25519.Point
	if _, err := a.SetBytes(pub); err != nil {
		return nil, fmt.Errorf("%w: Ed25519 public key is not a curve point", ErrKey)
	}
	k.negA.Negate(&a)
	return k, nil
}

// Verify is crypto/ed25519.Verify with the point kept: the cofactorless
// check of RFC 8032 §5.1.7 as Go does it. S must be canonical (S < L),
// k = SHA-512(R || A || M) mod L, and the encoding of [S]B - [k]A must be
// exactly R, so a non-canonical R is rejected too.
func (k *ed25519Key) Verify(msg, sig []byte) error {
	if len(sig) != ed25519.SignatureSize || sig[63]&0xe0 != 0 {
		return ErrSignature
	}
	s, err := edwards25519.NewScalar().SetCanonicalBytes(sig[32:])
	if err != nil {
		return ErrSignature
	}
	h := sha512.New()
	h.Write(sig[:32])
	h.Write(k.enc[:])
	h.Write(msg)
	var digest [sha512.Size]byte
	c, err := edwards25519.NewScalar().SetUniformBytes(h.Sum(digest[:0]))
	if err != nil {
		panic("cipher: Ed25519 challenge scalar: " + err.Error()) // 64 bytes are always uniform input
	}
	var r edwards25519.Point
	r.VarTimeDoubleScalarBaseMult(c, &k.negA, s)
	if !bytes.Equal(sig[:32], r.Bytes()) {
		return ErrSignature
	}
	return nil
}
