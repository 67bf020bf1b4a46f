package mls

import (
	"bytes"
	"fmt"

	"github.com/quicproquo/qpq/mls/cipher"
	"github.com/quicproquo/qpq/mls/codec"
)

// KeyPackage is a client's pre-published offer to be added to a group
// (RFC 9420 §10).
type KeyPackage struct {
	Version     ProtocolVersion
	CipherSuite CipherSuite
	InitKey     []byte
	LeafNode    LeafNode
	Extensions  Extensions
	Signature   []byte
}

func (k *KeyPackage) marshalTBS(b *codec.Builder) {
	b.AddUint16(uint16(k.Version))
	b.AddUint16(uint16(k.CipherSuite))
	b.AddOpaque(k.InitKey)
	k.LeafNode.MarshalTLS(b)
	k.Extensions.MarshalTLS(b)
}

// MarshalTLS implements codec.Marshaler.
func (k *KeyPackage) MarshalTLS(b *codec.Builder) {
	k.marshalTBS(b)
	b.AddOpaque(k.Signature)
}

// UnmarshalTLS implements codec.Unmarshaler.
func (k *KeyPackage) UnmarshalTLS(r *codec.Reader) {
	k.Version = ProtocolVersion(r.Uint16())
	k.CipherSuite = CipherSuite(r.Uint16())
	k.InitKey = r.Opaque(MaxKeySize)
	k.LeafNode.UnmarshalTLS(r)
	k.Extensions = readExtensions(r, MaxListSize)
	k.Signature = r.Opaque(MaxKeySize)
}

func (k *KeyPackage) tbs() []byte {
	var b codec.Builder
	k.marshalTBS(&b)
	return b.Bytes()
}

// DecodeKeyPackage decodes a TLS-encoded KeyPackage (not MLSMessage-framed).
// It checks syntax only; see ValidateKeyPackage.
func DecodeKeyPackage(data []byte) (*KeyPackage, error) {
	k := new(KeyPackage)
	if err := decode(data, k, "KeyPackage"); err != nil {
		return nil, err
	}
	return k, nil
}

// KeyPackageBundle is a KeyPackage with the private keys its owner keeps
// until a Welcome uses it. MarshalBinary and UnmarshalKeyPackageBundle
// persist it; the bytes are as secret as the keys.
type KeyPackageBundle struct {
	KeyPackage     *KeyPackage
	InitPriv       []byte // HPKE private key of KeyPackage.InitKey; nil once used
	EncryptionPriv []byte // HPKE private key of the leaf's encryption key
	Signer         cipher.Signer
}

// LastResort reports whether the KeyPackage carries the last_resort
// extension: it may be used by several Welcomes and is kept after a join.
func (k *KeyPackageBundle) LastResort() bool {
	return k.KeyPackage.Extensions.Has(ExtensionTypeLastResort)
}

// Ref returns the KeyPackageRef that Welcomes name this KeyPackage by
// (Welcome.KeyPackageRefs), e.g. to find its bundle in a store.
func (k *KeyPackageBundle) Ref() ([]byte, error) {
	s, err := cipher.Lookup(k.KeyPackage.CipherSuite)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	return keyPackageRef(s, k.KeyPackage), nil
}

// consume deletes the private keys of a single-use bundle after its join.
func (k *KeyPackageBundle) consume() {
	if k.LastResort() {
		return
	}
	wipe(k.InitPriv)
	wipe(k.EncryptionPriv)
	k.InitPriv, k.EncryptionPriv = nil, nil
}

// keyPackageBundleVersion is the version of the encoding MarshalBinary
// writes. A reader refuses other versions.
const keyPackageBundleVersion = 1

// MarshalBinary encodes the bundle (TLS presentation language):
//
//	uint16 version = 1;
//	KeyPackage key_package;
//	opaque init_priv<V>;
//	opaque encryption_priv<V>;
//	opaque signature_priv<V>;
//
// A single-use bundle that already joined a group is ErrKeyPackageUsed.
func (k *KeyPackageBundle) MarshalBinary() ([]byte, error) {
	if k.InitPriv == nil {
		return nil, ErrKeyPackageUsed
	}
	var b codec.Builder
	b.AddUint16(keyPackageBundleVersion)
	k.KeyPackage.MarshalTLS(&b)
	b.AddOpaque(k.InitPriv)
	b.AddOpaque(k.EncryptionPriv)
	b.AddOpaque(k.Signer.Bytes())
	return b.Bytes(), nil
}

// UnmarshalKeyPackageBundle restores a bundle from MarshalBinary's bytes,
// checking that its private keys match the KeyPackage's public keys.
func UnmarshalKeyPackageBundle(data []byte) (*KeyPackageBundle, error) {
	r := codec.NewReader(data)
	if v := r.Uint16(); r.Err() == nil && v != keyPackageBundleVersion {
		return nil, fmt.Errorf("%w: key package bundle version %d", ErrUnsupported, v)
	}
	k := &KeyPackageBundle{KeyPackage: new(KeyPackage)}
	k.KeyPackage.UnmarshalTLS(r)
	k.InitPriv = r.Opaque(MaxKeySize)
	k.EncryptionPriv = r.Opaque(MaxKeySize)
	sig := r.Opaque(MaxKeySize)
	if err := r.Finish(); err != nil {
		return nil, fmt.Errorf("%w: key package bundle: %w", ErrMalformed, err)
	}
	s, err := cipher.Lookup(k.KeyPackage.CipherSuite)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	if k.Signer, err = s.NewSigner(sig); err != nil {
		return nil, fmt.Errorf("%w: key package bundle: %w", ErrMalformed, err)
	}
	for _, c := range []struct {
		priv, pub []byte
		what      string
	}{{k.InitPriv, k.KeyPackage.InitKey, "init"}, {k.EncryptionPriv, k.KeyPackage.LeafNode.EncryptionKey, "encryption"}} {
		pub, err := s.KEMPublicKey(c.priv)
		if err != nil || !bytes.Equal(pub, c.pub) {
			return nil, fmt.Errorf("%w: key package bundle: %s key does not match", ErrMalformed, c.what)
		}
	}
	if !bytes.Equal(k.Signer.Public(), k.KeyPackage.LeafNode.SignatureKey) {
		return nil, fmt.Errorf("%w: key package bundle: signature key does not match", ErrMalformed)
	}
	return k, nil
}

// KeyPackageRefs returns the KeyPackageRefs a Welcome is addressed to, so
// the receiver can find which of its bundles to join with.
func (w *Welcome) KeyPackageRefs() [][]byte {
	out := make([][]byte, len(w.Secrets))
	for i, s := range w.Secrets {
		out[i] = clone(s.NewMember)
	}
	return out
}
