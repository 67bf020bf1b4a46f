package cipher

import (
	"crypto/ed25519"
	"fmt"

	"filippo.io/edwards25519"

	"github.com/quicproquo/qpq/mls/cipher/internal/ed25519vk"
)

// ed25519Scheme is pure Ed25519 (RFC 8032); private keys are 32-byte seeds.
type ed25519Scheme struct{}

var (
	_ sigScheme = ed25519Scheme{}
	_ oneShot   = ed25519Scheme{}
)

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

// verify checks one signature under an encoded key with crypto/ed25519,
// which is quicker than parsing the key for a single use.
func (ed25519Scheme) verify(pub, msg, sig []byte) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: Ed25519 public key of %d bytes", ErrKey, len(pub))
	}
	if !ed25519.Verify(ed25519.PublicKey(pub), msg, sig) {
		if _, err := new(edwards25519.Point).SetBytes(pub); err != nil {
			return fmt.Errorf("%w: Ed25519 public key is not a curve point", ErrKey)
		}
		return ErrSignature
	}
	return nil
}

func (s ed25519Signer) Sign(msg []byte) ([]byte, error) { return ed25519.Sign(s.key, msg), nil }
func (s ed25519Signer) Public() []byte                  { return append([]byte(nil), s.key[32:]...) }
func (s ed25519Signer) Bytes() []byte                   { return s.key.Seed() }

// ed25519Key is a parsed Ed25519 public key: crypto/ed25519 decodes the
// point (a field square root) on every Verify, and computes [S]B - [k]A in
// one long pass; ed25519vk keeps the point and tables that halve the pass,
// with exactly crypto/ed25519's answers.
type ed25519Key struct{ key *ed25519vk.PublicKey }

var _ VerificationKey = ed25519Key{}

func (ed25519Scheme) parse(pub []byte) (VerificationKey, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: Ed25519 public key of %d bytes", ErrKey, len(pub))
	}
	k, err := ed25519vk.NewPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: Ed25519 public key is not a curve point", ErrKey)
	}
	return ed25519Key{k}, nil
}

func (k ed25519Key) Verify(msg, sig []byte) error {
	if !k.key.Verify(msg, sig) {
		return ErrSignature
	}
	return nil
}
