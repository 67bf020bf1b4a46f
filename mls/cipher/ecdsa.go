package cipher

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
)

// ecdsaScheme is ECDSA over a NIST curve with the hash TLS 1.3 pairs with
// it (ecdsa_secp256r1_sha256, ecdsa_secp384r1_sha384,
// ecdsa_secp521r1_sha512), as RFC 9420 §5.1.2 requires. Signatures are
// DER-encoded Ecdsa-Sig-Value, as in TLS and the MLS test vectors; public
// keys are uncompressed SEC 1 points and private keys big-endian scalars
// (read with padScalar).
type ecdsaScheme struct {
	curve elliptic.Curve
	hash  crypto.Hash
}

var _ sigScheme = ecdsaScheme{}

type ecdsaSigner struct {
	key       *ecdsa.PrivateKey
	hash      crypto.Hash
	pub, priv []byte // encodings, computed once
}

var _ Signer = (*ecdsaSigner)(nil)

func (e ecdsaScheme) generate() (Signer, error) {
	k, err := ecdsa.GenerateKey(e.curve, rand.Reader)
	if err != nil {
		return nil, err
	}
	return e.signer(k)
}

func (e ecdsaScheme) load(priv []byte) (Signer, error) {
	k, err := ecdsa.ParseRawPrivateKey(e.curve, padScalar(priv, e.scalarSize()))
	if err != nil {
		return nil, fmt.Errorf("%w: ECDSA %s private key: %v", ErrKey, e.curve.Params().Name, err)
	}
	return e.signer(k)
}

// scalarSize is the fixed length of a private key: the byte length of the
// group order.
func (e ecdsaScheme) scalarSize() int { return (e.curve.Params().N.BitLen() + 7) / 8 }

func (e ecdsaScheme) signer(k *ecdsa.PrivateKey) (Signer, error) {
	pub, err := k.PublicKey.Bytes()
	if err != nil {
		return nil, fmt.Errorf("%w: ECDSA public key: %v", ErrKey, err)
	}
	priv, err := k.Bytes()
	if err != nil {
		return nil, fmt.Errorf("%w: ECDSA private key: %v", ErrKey, err)
	}
	return &ecdsaSigner{key: k, hash: e.hash, pub: pub, priv: priv}, nil
}

// ecdsaKey is a parsed ECDSA public key and the hash its scheme signs
// with.
type ecdsaKey struct {
	key  *ecdsa.PublicKey
	hash crypto.Hash
}

var _ VerificationKey = ecdsaKey{}

func (e ecdsaScheme) parse(pub []byte) (VerificationKey, error) {
	k, err := ecdsa.ParseUncompressedPublicKey(e.curve, pub)
	if err != nil {
		return nil, fmt.Errorf("%w: ECDSA %s public key: %v", ErrKey, e.curve.Params().Name, err)
	}
	return ecdsaKey{k, e.hash}, nil
}

func (k ecdsaKey) Verify(msg, sig []byte) error {
	if !ecdsa.VerifyASN1(k.key, digest(k.hash, msg), sig) {
		return ErrSignature
	}
	return nil
}

func digest(h crypto.Hash, msg []byte) []byte {
	d := h.New()
	d.Write(msg)
	return d.Sum(nil)
}

func (s *ecdsaSigner) Sign(msg []byte) ([]byte, error) {
	return ecdsa.SignASN1(rand.Reader, s.key, digest(s.hash, msg))
}

func (s *ecdsaSigner) Public() []byte { return append([]byte(nil), s.pub...) }
func (s *ecdsaSigner) Bytes() []byte  { return append([]byte(nil), s.priv...) }
