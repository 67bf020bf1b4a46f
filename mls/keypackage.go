package mls

import (
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
