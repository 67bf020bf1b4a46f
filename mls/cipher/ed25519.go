package cipher

import (
	"crypto/ed25519"
	"fmt"
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

func (ed25519Scheme) verify(pub, msg, sig []byte) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: Ed25519 public key of %d bytes", ErrKey, len(pub))
	}
	if !ed25519.Verify(ed25519.PublicKey(pub), msg, sig) {
		return ErrSignature
	}
	return nil
}

func (s ed25519Signer) Sign(msg []byte) ([]byte, error) { return ed25519.Sign(s.key, msg), nil }
func (s ed25519Signer) Public() []byte                  { return append([]byte(nil), s.key[32:]...) }
func (s ed25519Signer) Bytes() []byte                   { return s.key.Seed() }
