package cipher

import (
	"crypto/hpke"
	"fmt"
)

// stdHPKE is HPKE base mode from crypto/hpke: DHKEM over X25519 or the
// NIST curves, with HKDF and AES-GCM or ChaCha20-Poly1305.
type stdHPKE struct {
	kem  hpke.KEM
	kdf  hpke.KDF
	aead hpke.AEAD
	// scalarSize is Nsk for the NIST curves, whose private keys are read
	// with padScalar; 0 for X25519.
	scalarSize int
}

var _ hpkeScheme = stdHPKE{}

func (h stdHPKE) generate() ([]byte, []byte, error) {
	k, err := h.kem.GenerateKey()
	if err != nil {
		return nil, nil, err
	}
	return keyPair(k)
}

func (h stdHPKE) derive(ikm []byte) ([]byte, []byte, error) {
	k, err := h.kem.DeriveKeyPair(ikm)
	if err != nil {
		return nil, nil, err
	}
	return keyPair(k)
}

func keyPair(k hpke.PrivateKey) ([]byte, []byte, error) {
	priv, err := k.Bytes()
	if err != nil {
		return nil, nil, err
	}
	return priv, k.PublicKey().Bytes(), nil
}

func (h stdHPKE) private(priv []byte) (hpke.PrivateKey, error) {
	if h.scalarSize > 0 {
		priv = padScalar(priv, h.scalarSize)
	}
	k, err := h.kem.NewPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("%w: HPKE private key: %v", ErrKey, err)
	}
	return k, nil
}

func (h stdHPKE) publicKey(pub []byte) (hpke.PublicKey, error) {
	k, err := h.kem.NewPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: HPKE public key: %v", ErrKey, err)
	}
	return k, nil
}

func (h stdHPKE) public(priv []byte) ([]byte, error) {
	k, err := h.private(priv)
	if err != nil {
		return nil, err
	}
	return k.PublicKey().Bytes(), nil
}

func (h stdHPKE) seal(pub, info, pt []byte) ([]byte, []byte, error) {
	pk, err := h.publicKey(pub)
	if err != nil {
		return nil, nil, err
	}
	enc, s, err := hpke.NewSender(pk, h.kdf, h.aead, info)
	if err != nil {
		// Encapsulation fails only for a public key the DH rejects (an
		// X25519 low-order point).
		return nil, nil, fmt.Errorf("%w: HPKE public key: %v", ErrKey, err)
	}
	ct, err := s.Seal(nil, pt)
	if err != nil {
		return nil, nil, err
	}
	return enc, ct, nil
}

func (h stdHPKE) open(priv, enc, info, ct []byte) ([]byte, error) {
	sk, err := h.private(priv)
	if err != nil {
		return nil, err
	}
	r, err := hpke.NewRecipient(enc, sk, h.kdf, h.aead, info)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecrypt, err)
	}
	pt, err := r.Open(nil, ct)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

func (h stdHPKE) exportSender(pub, info, ctx []byte, n int) ([]byte, []byte, error) {
	pk, err := h.publicKey(pub)
	if err != nil {
		return nil, nil, err
	}
	enc, s, err := hpke.NewSender(pk, h.kdf, h.aead, info)
	if err != nil {
		// Encapsulation fails only for a public key the DH rejects (an
		// X25519 low-order point).
		return nil, nil, fmt.Errorf("%w: HPKE public key: %v", ErrKey, err)
	}
	secret, err := s.Export(string(ctx), n)
	if err != nil {
		return nil, nil, err
	}
	return enc, secret, nil
}

func (h stdHPKE) exportReceiver(priv, enc, info, ctx []byte, n int) ([]byte, error) {
	sk, err := h.private(priv)
	if err != nil {
		return nil, err
	}
	r, err := hpke.NewRecipient(enc, sk, h.kdf, h.aead, info)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecrypt, err)
	}
	return r.Export(string(ctx), n)
}
