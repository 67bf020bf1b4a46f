package cipher

import (
	"fmt"

	"github.com/cloudflare/circl/ecc/goldilocks"
	"github.com/cloudflare/circl/sign/ed448"
)

// ed448Scheme is pure Ed448 (RFC 8032 §5.2) with the empty context string,
// as RFC 9420 §5.1.2 uses it; private keys are 57-byte seeds, public keys
// 57-byte encoded points, signatures 114 bytes.
type ed448Scheme struct{}

var _ sigScheme = ed448Scheme{}

type ed448Signer struct{ key ed448.PrivateKey }

var _ Signer = ed448Signer{}

// ed448Context is the RFC 8032 context; MLS signs with none.
const ed448Context = ""

func (ed448Scheme) generate() (Signer, error) {
	_, k, err := ed448.GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	return ed448Signer{k}, nil
}

func (ed448Scheme) load(priv []byte) (Signer, error) {
	if len(priv) != ed448.SeedSize {
		return nil, fmt.Errorf("%w: Ed448 private key of %d bytes, want %d", ErrKey, len(priv), ed448.SeedSize)
	}
	return ed448Signer{ed448.NewKeyFromSeed(priv)}, nil
}

// ed448Key is an Ed448 public key checked to be a curve point; circl's
// Verify decodes it again each time.
type ed448Key []byte

var _ VerificationKey = ed448Key(nil)

func (ed448Scheme) parse(pub []byte) (VerificationKey, error) {
	if len(pub) != ed448.PublicKeySize {
		return nil, fmt.Errorf("%w: Ed448 public key of %d bytes, want %d", ErrKey, len(pub), ed448.PublicKeySize)
	}
	// Verify would reject a key that is not a point just the same, but a
	// caller validating a leaf should learn that the key is malformed, not
	// that one signature failed.
	if _, err := goldilocks.FromBytes(pub); err != nil {
		return nil, fmt.Errorf("%w: Ed448 public key is not a curve point", ErrKey)
	}
	return ed448Key(append([]byte(nil), pub...)), nil
}

func (k ed448Key) Verify(msg, sig []byte) error {
	if !ed448.Verify(ed448.PublicKey(k), msg, sig, ed448Context) {
		return ErrSignature
	}
	return nil
}

func (s ed448Signer) Sign(msg []byte) ([]byte, error) {
	return ed448.Sign(s.key, msg, ed448Context), nil
}

func (s ed448Signer) Public() []byte {
	return append([]byte(nil), s.key[ed448.SeedSize:]...)
}

func (s ed448Signer) Bytes() []byte { return s.key.Seed() }
