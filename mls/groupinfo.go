package mls

import (
	"github.com/quicproquo/qpq/mls/codec"
)

// GroupContext summarizes the state of a group in one epoch (RFC 9420 §8.1).
type GroupContext struct {
	Version                 ProtocolVersion
	CipherSuite             CipherSuite
	GroupID                 []byte
	Epoch                   uint64
	TreeHash                []byte
	ConfirmedTranscriptHash []byte
	Extensions              Extensions
}

// MarshalTLS implements codec.Marshaler.
func (g *GroupContext) MarshalTLS(b *codec.Builder) {
	b.AddUint16(uint16(g.Version))
	b.AddUint16(uint16(g.CipherSuite))
	b.AddOpaque(g.GroupID)
	b.AddUint64(g.Epoch)
	b.AddOpaque(g.TreeHash)
	b.AddOpaque(g.ConfirmedTranscriptHash)
	g.Extensions.MarshalTLS(b)
}

// UnmarshalTLS implements codec.Unmarshaler.
func (g *GroupContext) UnmarshalTLS(r *codec.Reader) {
	g.Version = ProtocolVersion(r.Uint16())
	g.CipherSuite = CipherSuite(r.Uint16())
	g.GroupID = r.Opaque(MaxGroupIDSize)
	g.Epoch = r.Uint64()
	g.TreeHash = r.Opaque(MaxKeySize)
	g.ConfirmedTranscriptHash = r.Opaque(MaxKeySize)
	g.Extensions = readExtensions(r, MaxDataSize)
}

func (g *GroupContext) clone() GroupContext {
	c := *g
	c.GroupID = clone(g.GroupID)
	c.TreeHash = clone(g.TreeHash)
	c.ConfirmedTranscriptHash = clone(g.ConfirmedTranscriptHash)
	c.Extensions = append(Extensions(nil), g.Extensions...)
	return c
}

// GroupInfo describes a group to a joiner (RFC 9420 §12.4.3).
type GroupInfo struct {
	GroupContext    GroupContext
	Extensions      Extensions
	ConfirmationTag []byte
	Signer          LeafIndex
	Signature       []byte
}

func (g *GroupInfo) marshalTBS(b *codec.Builder) {
	g.GroupContext.MarshalTLS(b)
	g.Extensions.MarshalTLS(b)
	b.AddOpaque(g.ConfirmationTag)
	b.AddUint32(uint32(g.Signer))
}

func (g *GroupInfo) tbs() []byte {
	var b codec.Builder
	g.marshalTBS(&b)
	return b.Bytes()
}

// MarshalTLS implements codec.Marshaler.
func (g *GroupInfo) MarshalTLS(b *codec.Builder) {
	g.marshalTBS(b)
	b.AddOpaque(g.Signature)
}

// UnmarshalTLS implements codec.Unmarshaler.
func (g *GroupInfo) UnmarshalTLS(r *codec.Reader) {
	g.GroupContext.UnmarshalTLS(r)
	g.Extensions = readExtensions(r, MaxDataSize)
	g.ConfirmationTag = r.Opaque(MaxKeySize)
	g.Signer = LeafIndex(r.Uint32())
	g.Signature = r.Opaque(MaxKeySize)
}

// PathSecret carries the path secret of the lowest node a joiner shares
// with the committer.
type PathSecret struct {
	PathSecret []byte
}

// GroupSecrets is what a Welcome encrypts to each new member.
type GroupSecrets struct {
	JoinerSecret []byte
	PathSecret   *PathSecret
	PSKs         []PreSharedKeyID
}

// MarshalTLS implements codec.Marshaler.
func (g *GroupSecrets) MarshalTLS(b *codec.Builder) {
	b.AddOpaque(g.JoinerSecret)
	b.AddOptional(g.PathSecret != nil, func(b *codec.Builder) { b.AddOpaque(g.PathSecret.PathSecret) })
	codec.AddList(b, g.PSKs, func(b *codec.Builder, p PreSharedKeyID) { p.MarshalTLS(b) })
}

// UnmarshalTLS implements codec.Unmarshaler.
func (g *GroupSecrets) UnmarshalTLS(r *codec.Reader) {
	g.JoinerSecret = r.Opaque(MaxKeySize)
	if r.Optional() {
		g.PathSecret = &PathSecret{PathSecret: r.Opaque(MaxKeySize)}
	}
	g.PSKs = readPSKIDs(r)
}

func readPSKIDs(r *codec.Reader) []PreSharedKeyID {
	return codec.ReadList(r, MaxDataSize, MaxProposals, func(r *codec.Reader) PreSharedKeyID {
		var p PreSharedKeyID
		p.UnmarshalTLS(r)
		return p
	})
}

// EncryptedGroupSecrets is GroupSecrets encrypted to one new member's
// KeyPackage.
type EncryptedGroupSecrets struct {
	NewMember             []byte // KeyPackageRef
	EncryptedGroupSecrets HPKECiphertext
}

// Welcome brings new members into a group (RFC 9420 §12.4.3.1).
type Welcome struct {
	CipherSuite        CipherSuite
	Secrets            []EncryptedGroupSecrets
	EncryptedGroupInfo []byte
}

// MarshalTLS implements codec.Marshaler.
func (w *Welcome) MarshalTLS(b *codec.Builder) {
	b.AddUint16(uint16(w.CipherSuite))
	codec.AddList(b, w.Secrets, func(b *codec.Builder, s EncryptedGroupSecrets) {
		b.AddOpaque(s.NewMember)
		s.EncryptedGroupSecrets.MarshalTLS(b)
	})
	b.AddOpaque(w.EncryptedGroupInfo)
}

// UnmarshalTLS implements codec.Unmarshaler.
func (w *Welcome) UnmarshalTLS(r *codec.Reader) {
	w.CipherSuite = CipherSuite(r.Uint16())
	w.Secrets = codec.ReadList(r, MaxDataSize, MaxWelcomeSecrets, func(r *codec.Reader) EncryptedGroupSecrets {
		var s EncryptedGroupSecrets
		s.NewMember = r.Opaque(MaxKeySize)
		s.EncryptedGroupSecrets.UnmarshalTLS(r)
		return s
	})
	w.EncryptedGroupInfo = r.Opaque(MaxDataSize)
}
