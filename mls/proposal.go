package mls

import (
	"github.com/quicproquo/qpq/mls/codec"
)

// Proposal is one proposed change to a group (RFC 9420 §12.1). The
// implementations are the *...Proposal types of this package.
type Proposal interface {
	ProposalType() ProposalType
	// marshalBody writes the proposal without its type.
	marshalBody(b *codec.Builder)
}

// AddProposal adds the client of a KeyPackage.
type AddProposal struct{ KeyPackage KeyPackage }

// UpdateProposal replaces the sender's leaf.
type UpdateProposal struct{ LeafNode LeafNode }

// RemoveProposal removes the member at a leaf.
type RemoveProposal struct{ Removed LeafIndex }

// PreSharedKeyProposal injects a PSK into the next epoch.
type PreSharedKeyProposal struct{ PSK PreSharedKeyID }

// ReInitProposal asks to re-create the group with new parameters.
type ReInitProposal struct {
	GroupID     []byte
	Version     ProtocolVersion
	CipherSuite CipherSuite
	Extensions  Extensions
}

// ExternalInitProposal carries an external joiner's KEM output.
type ExternalInitProposal struct{ KEMOutput []byte }

// GroupContextExtensionsProposal replaces the group's extensions.
type GroupContextExtensionsProposal struct{ Extensions Extensions }

var (
	_ Proposal = (*AddProposal)(nil)
	_ Proposal = (*UpdateProposal)(nil)
	_ Proposal = (*RemoveProposal)(nil)
	_ Proposal = (*PreSharedKeyProposal)(nil)
	_ Proposal = (*ReInitProposal)(nil)
	_ Proposal = (*ExternalInitProposal)(nil)
	_ Proposal = (*GroupContextExtensionsProposal)(nil)
)

func (*AddProposal) ProposalType() ProposalType          { return ProposalTypeAdd }
func (*UpdateProposal) ProposalType() ProposalType       { return ProposalTypeUpdate }
func (*RemoveProposal) ProposalType() ProposalType       { return ProposalTypeRemove }
func (*PreSharedKeyProposal) ProposalType() ProposalType { return ProposalTypePSK }
func (*ReInitProposal) ProposalType() ProposalType       { return ProposalTypeReInit }
func (*ExternalInitProposal) ProposalType() ProposalType { return ProposalTypeExternalInit }
func (*GroupContextExtensionsProposal) ProposalType() ProposalType {
	return ProposalTypeGroupContextExtensions
}

func (p *AddProposal) marshalBody(b *codec.Builder)          { p.KeyPackage.MarshalTLS(b) }
func (p *UpdateProposal) marshalBody(b *codec.Builder)       { p.LeafNode.MarshalTLS(b) }
func (p *RemoveProposal) marshalBody(b *codec.Builder)       { b.AddUint32(uint32(p.Removed)) }
func (p *PreSharedKeyProposal) marshalBody(b *codec.Builder) { p.PSK.MarshalTLS(b) }
func (p *ExternalInitProposal) marshalBody(b *codec.Builder) { b.AddOpaque(p.KEMOutput) }
func (p *GroupContextExtensionsProposal) marshalBody(b *codec.Builder) {
	p.Extensions.MarshalTLS(b)
}

func (p *ReInitProposal) marshalBody(b *codec.Builder) {
	b.AddOpaque(p.GroupID)
	b.AddUint16(uint16(p.Version))
	b.AddUint16(uint16(p.CipherSuite))
	p.Extensions.MarshalTLS(b)
}

// MarshalTLS implements codec.Marshaler for the proposal bodies (the
// structs Add, Update, … of RFC 9420, without the proposal type).
func (p *AddProposal) MarshalTLS(b *codec.Builder)          { p.marshalBody(b) }
func (p *UpdateProposal) MarshalTLS(b *codec.Builder)       { p.marshalBody(b) }
func (p *RemoveProposal) MarshalTLS(b *codec.Builder)       { p.marshalBody(b) }
func (p *PreSharedKeyProposal) MarshalTLS(b *codec.Builder) { p.marshalBody(b) }
func (p *ReInitProposal) MarshalTLS(b *codec.Builder)       { p.marshalBody(b) }
func (p *ExternalInitProposal) MarshalTLS(b *codec.Builder) { p.marshalBody(b) }
func (p *GroupContextExtensionsProposal) MarshalTLS(b *codec.Builder) {
	p.marshalBody(b)
}

// UnmarshalTLS implements codec.Unmarshaler for the proposal bodies.
func (p *AddProposal) UnmarshalTLS(r *codec.Reader)    { p.KeyPackage.UnmarshalTLS(r) }
func (p *UpdateProposal) UnmarshalTLS(r *codec.Reader) { p.LeafNode.UnmarshalTLS(r) }
func (p *RemoveProposal) UnmarshalTLS(r *codec.Reader) { p.Removed = LeafIndex(r.Uint32()) }
func (p *PreSharedKeyProposal) UnmarshalTLS(r *codec.Reader) {
	p.PSK.UnmarshalTLS(r)
}
func (p *ExternalInitProposal) UnmarshalTLS(r *codec.Reader) {
	p.KEMOutput = r.Opaque(MaxKeySize)
}
func (p *GroupContextExtensionsProposal) UnmarshalTLS(r *codec.Reader) {
	p.Extensions = readExtensions(r, MaxDataSize)
}
func (p *ReInitProposal) UnmarshalTLS(r *codec.Reader) {
	p.GroupID = r.Opaque(MaxGroupIDSize)
	p.Version = ProtocolVersion(r.Uint16())
	p.CipherSuite = CipherSuite(r.Uint16())
	p.Extensions = readExtensions(r, MaxDataSize)
}

// marshalProposal writes struct Proposal: the type, then the body.
func marshalProposal(b *codec.Builder, p Proposal) {
	b.AddUint16(uint16(p.ProposalType()))
	p.marshalBody(b)
}

// readProposal reads struct Proposal. Proposal types this package does not
// know have no length-delimited body, so they cannot be skipped and are
// rejected.
func readProposal(r *codec.Reader) Proposal {
	var p interface {
		Proposal
		codec.Unmarshaler
	}
	switch t := ProposalType(r.Uint16()); t {
	case ProposalTypeAdd:
		p = new(AddProposal)
	case ProposalTypeUpdate:
		p = new(UpdateProposal)
	case ProposalTypeRemove:
		p = new(RemoveProposal)
	case ProposalTypePSK:
		p = new(PreSharedKeyProposal)
	case ProposalTypeReInit:
		p = new(ReInitProposal)
	case ProposalTypeExternalInit:
		p = new(ExternalInitProposal)
	case ProposalTypeGroupContextExtensions:
		p = new(GroupContextExtensionsProposal)
	default:
		r.Failf("unsupported proposal type 0x%04x", uint16(t))
		return nil
	}
	p.UnmarshalTLS(r)
	return p
}

// PSKType says where a PSK comes from.
type PSKType uint8

// PSK types.
const (
	PSKTypeExternal   PSKType = 1
	PSKTypeResumption PSKType = 2
)

// ResumptionPSKUsage says what a resumption PSK is used for.
type ResumptionPSKUsage uint8

// Resumption PSK usages.
const (
	ResumptionPSKUsageApplication ResumptionPSKUsage = 1
	ResumptionPSKUsageReInit      ResumptionPSKUsage = 2
	ResumptionPSKUsageBranch      ResumptionPSKUsage = 3
)

// PreSharedKeyID names a PSK (RFC 9420 §8.4).
type PreSharedKeyID struct {
	Type PSKType
	// External PSKs.
	PSKID []byte
	// Resumption PSKs.
	Usage      ResumptionPSKUsage
	PSKGroupID []byte
	PSKEpoch   uint64

	PSKNonce []byte
}

// MarshalTLS implements codec.Marshaler.
func (p *PreSharedKeyID) MarshalTLS(b *codec.Builder) {
	b.AddUint8(uint8(p.Type))
	switch p.Type {
	case PSKTypeExternal:
		b.AddOpaque(p.PSKID)
	case PSKTypeResumption:
		b.AddUint8(uint8(p.Usage))
		b.AddOpaque(p.PSKGroupID)
		b.AddUint64(p.PSKEpoch)
	}
	b.AddOpaque(p.PSKNonce)
}

// UnmarshalTLS implements codec.Unmarshaler.
func (p *PreSharedKeyID) UnmarshalTLS(r *codec.Reader) {
	p.Type = PSKType(r.Uint8())
	switch p.Type {
	case PSKTypeExternal:
		p.PSKID = r.Opaque(MaxKeySize)
	case PSKTypeResumption:
		p.Usage = ResumptionPSKUsage(r.Uint8())
		if p.Usage < ResumptionPSKUsageApplication || p.Usage > ResumptionPSKUsageBranch {
			r.Failf("resumption PSK usage %d", p.Usage)
			return
		}
		p.PSKGroupID = r.Opaque(MaxGroupIDSize)
		p.PSKEpoch = r.Uint64()
	default:
		r.Failf("PSK type %d", p.Type)
		return
	}
	p.PSKNonce = r.Opaque(MaxKeySize)
}

// ProposalOrRef is a proposal in a Commit, by value or by reference.
type ProposalOrRef struct {
	Proposal  Proposal // by value, or nil
	Reference []byte   // ProposalRef, when Proposal is nil
}

// Proposal-or-reference tags.
const (
	proposalOrRefProposal  = 1
	proposalOrRefReference = 2
)

// MarshalTLS implements codec.Marshaler.
func (p *ProposalOrRef) MarshalTLS(b *codec.Builder) {
	if p.Proposal != nil {
		b.AddUint8(proposalOrRefProposal)
		marshalProposal(b, p.Proposal)
		return
	}
	b.AddUint8(proposalOrRefReference)
	b.AddOpaque(p.Reference)
}

// UnmarshalTLS implements codec.Unmarshaler.
func (p *ProposalOrRef) UnmarshalTLS(r *codec.Reader) {
	switch t := r.Uint8(); t {
	case proposalOrRefProposal:
		p.Proposal = readProposal(r)
	case proposalOrRefReference:
		p.Reference = r.Opaque(MaxKeySize)
	default:
		r.Failf("proposal-or-ref type %d", t)
	}
}

// Commit applies proposals and, with a path, refreshes the committer's
// keys (RFC 9420 §12.4).
type Commit struct {
	Proposals []ProposalOrRef
	Path      *UpdatePath
}

// MarshalTLS implements codec.Marshaler.
func (c *Commit) MarshalTLS(b *codec.Builder) {
	codec.AddList(b, c.Proposals, func(b *codec.Builder, p ProposalOrRef) { p.MarshalTLS(b) })
	b.AddOptional(c.Path != nil, func(b *codec.Builder) { c.Path.MarshalTLS(b) })
}

// UnmarshalTLS implements codec.Unmarshaler.
func (c *Commit) UnmarshalTLS(r *codec.Reader) {
	c.Proposals = codec.ReadList(r, MaxDataSize, MaxProposals, func(r *codec.Reader) ProposalOrRef {
		var p ProposalOrRef
		p.UnmarshalTLS(r)
		return p
	})
	if r.Optional() {
		c.Path = new(UpdatePath)
		c.Path.UnmarshalTLS(r)
	}
}

// UpdatePathNode is the new public key of one node on the committer's
// filtered direct path and its path secret encrypted to the copath.
type UpdatePathNode struct {
	EncryptionKey       []byte
	EncryptedPathSecret []HPKECiphertext
}

// UpdatePath is the committer's new leaf and path (RFC 9420 §7.6).
type UpdatePath struct {
	LeafNode LeafNode
	Nodes    []UpdatePathNode
}

// MarshalTLS implements codec.Marshaler.
func (p *UpdatePath) MarshalTLS(b *codec.Builder) {
	p.LeafNode.MarshalTLS(b)
	codec.AddList(b, p.Nodes, func(b *codec.Builder, n UpdatePathNode) {
		b.AddOpaque(n.EncryptionKey)
		codec.AddList(b, n.EncryptedPathSecret, func(b *codec.Builder, c HPKECiphertext) { c.MarshalTLS(b) })
	})
}

// UnmarshalTLS implements codec.Unmarshaler.
func (p *UpdatePath) UnmarshalTLS(r *codec.Reader) {
	p.LeafNode.UnmarshalTLS(r)
	p.Nodes = codec.ReadList(r, MaxDataSize, MaxPathLength, func(r *codec.Reader) UpdatePathNode {
		var n UpdatePathNode
		n.EncryptionKey = r.Opaque(MaxKeySize)
		n.EncryptedPathSecret = codec.ReadList(r, MaxDataSize, MaxLeaves, func(r *codec.Reader) HPKECiphertext {
			var c HPKECiphertext
			c.UnmarshalTLS(r)
			return c
		})
		return n
	})
}
