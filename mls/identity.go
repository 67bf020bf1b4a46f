package mls

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"

	"github.com/quicproquo/qpq/mls/cipher"
)

// Identities in this project (DESIGN.md): a member's credential is a
// BasicCredential whose identity is its 32-byte Ed25519 identity key, and
// that key is also the leaf's signature key. A peer is its key.

// ErrIdentity: a credential that breaks the identity rule of
// ValidateEd25519Identity.
var ErrIdentity = errors.New("mls: credential identity is not the signature key")

// Ed25519Identity returns the signer and credential of a member whose
// identity is the Ed25519 key priv, for the Ed25519 cipher suites (0x0001,
// 0x0003).
func Ed25519Identity(priv ed25519.PrivateKey) (cipher.Signer, Credential, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, Credential{}, fmt.Errorf("mls: Ed25519 private key of %d bytes", len(priv))
	}
	s, err := cipher.Lookup(cipher.X25519_AES128GCM_SHA256_Ed25519)
	if err != nil {
		return nil, Credential{}, err
	}
	signer, err := s.NewSigner(priv.Seed())
	if err != nil {
		return nil, Credential{}, err
	}
	return signer, BasicCredential(signer.Public()), nil
}

// ValidateEd25519Identity accepts exactly the credentials of
// Ed25519Identity: basic, with an identity of ed25519.PublicKeySize bytes
// equal to the signature key. Use it as Config.ValidateCredential.
func ValidateEd25519Identity(c Credential, signatureKey []byte) error {
	if c.Type != CredentialTypeBasic {
		return fmt.Errorf("%w: credential type 0x%04x", ErrIdentity, uint16(c.Type))
	}
	if len(c.Identity) != ed25519.PublicKeySize || !bytes.Equal(c.Identity, signatureKey) {
		return ErrIdentity
	}
	return nil
}
