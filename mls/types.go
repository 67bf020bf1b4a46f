package mls

import (
	"bytes"
	"fmt"

	"github.com/quicproquo/qpq/mls/cipher"
	"github.com/quicproquo/qpq/mls/codec"
)

// CipherSuite is the uint16 cipher suite identifier.
type CipherSuite = cipher.ID

// ProtocolVersion is the uint16 MLS protocol version.
type ProtocolVersion uint16

// MLS10 is the only protocol version, mls10.
const MLS10 ProtocolVersion = 1

// WireFormat says what an MLSMessage carries (RFC 9420 §17.2).
type WireFormat uint16

// Wire formats.
const (
	WireFormatPublicMessage  WireFormat = 1
	WireFormatPrivateMessage WireFormat = 2
	WireFormatWelcome        WireFormat = 3
	WireFormatGroupInfo      WireFormat = 4
	WireFormatKeyPackage     WireFormat = 5
)

// ContentType says what a FramedContent carries.
type ContentType uint8

// Content types.
const (
	ContentTypeApplication ContentType = 1
	ContentTypeProposal    ContentType = 2
	ContentTypeCommit      ContentType = 3
)

func (c ContentType) valid() bool { return c >= ContentTypeApplication && c <= ContentTypeCommit }

// SenderType says who sent a FramedContent.
type SenderType uint8

// Sender types.
const (
	SenderTypeMember            SenderType = 1
	SenderTypeExternal          SenderType = 2
	SenderTypeNewMemberProposal SenderType = 3
	SenderTypeNewMemberCommit   SenderType = 4
)

// ExtensionType identifies an extension (RFC 9420 §17.3).
type ExtensionType uint16

// Extension types defined by RFC 9420.
const (
	ExtensionTypeApplicationID        ExtensionType = 1
	ExtensionTypeRatchetTree          ExtensionType = 2
	ExtensionTypeRequiredCapabilities ExtensionType = 3
	ExtensionTypeExternalPub          ExtensionType = 4
	ExtensionTypeExternalSenders      ExtensionType = 5
	// ExtensionTypeLastResort marks a KeyPackage that may be used more
	// than once (the last_resort extension of the MLS extensions
	// registry, which RFC 9420 §17.3 created). Its data is empty.
	ExtensionTypeLastResort ExtensionType = 0x000a
)

// LastResort returns the last_resort KeyPackage extension: pass it to
// NewKeyPackage to make a KeyPackage that is not deleted when used, for
// when every single-use one has been taken.
func LastResort() Extension { return Extension{Type: ExtensionTypeLastResort, Data: []byte{}} }

// isDefault reports whether t is one of the extension types every client
// supports and that capabilities must not list.
func (t ExtensionType) isDefault() bool { return t >= 1 && t <= 5 }

// ProposalType identifies a proposal (RFC 9420 §17.4).
type ProposalType uint16

// Proposal types defined by RFC 9420.
const (
	ProposalTypeAdd                    ProposalType = 1
	ProposalTypeUpdate                 ProposalType = 2
	ProposalTypeRemove                 ProposalType = 3
	ProposalTypePSK                    ProposalType = 4
	ProposalTypeReInit                 ProposalType = 5
	ProposalTypeExternalInit           ProposalType = 6
	ProposalTypeGroupContextExtensions ProposalType = 7
)

func (t ProposalType) isDefault() bool { return t >= 1 && t <= 7 }

// CredentialType identifies a credential format (RFC 9420 §17.5).
type CredentialType uint16

// Credential types defined by RFC 9420.
const (
	CredentialTypeBasic CredentialType = 1
	CredentialTypeX509  CredentialType = 2
)

// Extension is one entry of an extension list.
type Extension struct {
	Type ExtensionType
	Data []byte
}

// Extensions is an extension list; no type appears twice.
type Extensions []Extension

// Find returns the data of the extension of type t.
func (e Extensions) Find(t ExtensionType) ([]byte, bool) {
	for _, x := range e {
		if x.Type == t {
			return x.Data, true
		}
	}
	return nil, false
}

// Has reports whether an extension of type t is present.
func (e Extensions) Has(t ExtensionType) bool {
	_, ok := e.Find(t)
	return ok
}

// MarshalTLS implements codec.Marshaler (Extension extensions<V>).
func (e Extensions) MarshalTLS(b *codec.Builder) {
	codec.AddList(b, e, func(b *codec.Builder, x Extension) {
		b.AddUint16(uint16(x.Type))
		b.AddOpaque(x.Data)
	})
}

// readExtensions reads an extension list of at most maxBytes bytes and
// rejects duplicate types.
func readExtensions(r *codec.Reader, maxBytes int) Extensions {
	list := codec.ReadList(r, maxBytes, MaxExtensions, func(r *codec.Reader) Extension {
		return Extension{Type: ExtensionType(r.Uint16()), Data: r.Opaque(MaxDataSize)}
	})
	for i := range list {
		for j := i + 1; j < len(list); j++ {
			if list[i].Type == list[j].Type {
				r.Failf("extension type 0x%04x appears twice", uint16(list[i].Type))
				return nil
			}
		}
	}
	return list
}

// Credential binds identities to a signature key (RFC 9420 §5.3).
type Credential struct {
	Type         CredentialType
	Identity     []byte   // basic
	Certificates [][]byte // x509: DER certificates, end-entity first
}

// BasicCredential returns a basic credential with the given identity.
func BasicCredential(identity []byte) Credential {
	return Credential{Type: CredentialTypeBasic, Identity: clone(identity)}
}

func (c *Credential) clone() Credential {
	out := Credential{Type: c.Type, Identity: clone(c.Identity)}
	for _, cert := range c.Certificates {
		out.Certificates = append(out.Certificates, clone(cert))
	}
	return out
}

// Equal reports whether two credentials are the same.
func (c *Credential) Equal(o *Credential) bool {
	if c.Type != o.Type || !bytes.Equal(c.Identity, o.Identity) || len(c.Certificates) != len(o.Certificates) {
		return false
	}
	for i := range c.Certificates {
		if !bytes.Equal(c.Certificates[i], o.Certificates[i]) {
			return false
		}
	}
	return true
}

// MarshalTLS implements codec.Marshaler.
func (c *Credential) MarshalTLS(b *codec.Builder) {
	b.AddUint16(uint16(c.Type))
	switch c.Type {
	case CredentialTypeBasic:
		b.AddOpaque(c.Identity)
	case CredentialTypeX509:
		codec.AddList(b, c.Certificates, func(b *codec.Builder, cert []byte) { b.AddOpaque(cert) })
	}
}

// UnmarshalTLS implements codec.Unmarshaler. Other credential types have no
// length-delimited body and cannot be skipped, so they are rejected.
func (c *Credential) UnmarshalTLS(r *codec.Reader) {
	c.Type = CredentialType(r.Uint16())
	switch c.Type {
	case CredentialTypeBasic:
		c.Identity = r.Opaque(MaxCredentialSize)
	case CredentialTypeX509:
		c.Certificates = codec.ReadList(r, MaxCertificates*(MaxCredentialSize+4), MaxCertificates,
			func(r *codec.Reader) []byte { return r.Opaque(MaxCredentialSize) })
	default:
		r.Failf("unsupported credential type 0x%04x", uint16(c.Type))
	}
}

// Capabilities lists what a client supports (RFC 9420 §7.2).
type Capabilities struct {
	Versions     []ProtocolVersion
	CipherSuites []CipherSuite
	Extensions   []ExtensionType
	Proposals    []ProposalType
	Credentials  []CredentialType
}

func addUint16s[T ~uint16](b *codec.Builder, v []T) {
	codec.AddList(b, v, func(b *codec.Builder, x T) { b.AddUint16(uint16(x)) })
}

func readUint16s[T ~uint16](r *codec.Reader) []T {
	return codec.ReadList(r, 2*MaxCapabilityItems, MaxCapabilityItems, func(r *codec.Reader) T { return T(r.Uint16()) })
}

// MarshalTLS implements codec.Marshaler.
func (c *Capabilities) MarshalTLS(b *codec.Builder) {
	addUint16s(b, c.Versions)
	addUint16s(b, c.CipherSuites)
	addUint16s(b, c.Extensions)
	addUint16s(b, c.Proposals)
	addUint16s(b, c.Credentials)
}

// UnmarshalTLS implements codec.Unmarshaler.
func (c *Capabilities) UnmarshalTLS(r *codec.Reader) {
	c.Versions = readUint16s[ProtocolVersion](r)
	c.CipherSuites = readUint16s[CipherSuite](r)
	c.Extensions = readUint16s[ExtensionType](r)
	c.Proposals = readUint16s[ProposalType](r)
	c.Credentials = readUint16s[CredentialType](r)
}

func contains[T comparable](list []T, v T) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// Lifetime is the validity period of a KeyPackage's leaf, in seconds since
// the Unix epoch.
type Lifetime struct {
	NotBefore, NotAfter uint64
}

// RequiredCapabilities is the required_capabilities extension.
type RequiredCapabilities struct {
	ExtensionTypes  []ExtensionType
	ProposalTypes   []ProposalType
	CredentialTypes []CredentialType
}

// MarshalTLS implements codec.Marshaler.
func (c *RequiredCapabilities) MarshalTLS(b *codec.Builder) {
	addUint16s(b, c.ExtensionTypes)
	addUint16s(b, c.ProposalTypes)
	addUint16s(b, c.CredentialTypes)
}

// UnmarshalTLS implements codec.Unmarshaler.
func (c *RequiredCapabilities) UnmarshalTLS(r *codec.Reader) {
	c.ExtensionTypes = readUint16s[ExtensionType](r)
	c.ProposalTypes = readUint16s[ProposalType](r)
	c.CredentialTypes = readUint16s[CredentialType](r)
}

// ExternalSender is one entry of the external_senders extension.
type ExternalSender struct {
	SignatureKey []byte
	Credential   Credential
}

// ExternalSenders is the external_senders extension.
type ExternalSenders []ExternalSender

// MarshalTLS implements codec.Marshaler.
func (e ExternalSenders) MarshalTLS(b *codec.Builder) {
	codec.AddList(b, e, func(b *codec.Builder, x ExternalSender) {
		b.AddOpaque(x.SignatureKey)
		x.Credential.MarshalTLS(b)
	})
}

// UnmarshalTLS implements codec.Unmarshaler.
func (e *ExternalSenders) UnmarshalTLS(r *codec.Reader) {
	*e = codec.ReadList(r, MaxDataSize, MaxLeaves, func(r *codec.Reader) ExternalSender {
		var x ExternalSender
		x.SignatureKey = r.Opaque(MaxKeySize)
		x.Credential.UnmarshalTLS(r)
		return x
	})
}

// HPKECiphertext is an HPKE encapsulation and ciphertext.
type HPKECiphertext struct {
	KEMOutput  []byte
	Ciphertext []byte
}

// MarshalTLS implements codec.Marshaler.
func (c *HPKECiphertext) MarshalTLS(b *codec.Builder) {
	b.AddOpaque(c.KEMOutput)
	b.AddOpaque(c.Ciphertext)
}

// UnmarshalTLS implements codec.Unmarshaler.
func (c *HPKECiphertext) UnmarshalTLS(r *codec.Reader) {
	c.KEMOutput = r.Opaque(MaxKeySize)
	c.Ciphertext = r.Opaque(MaxDataSize)
}

// decode unmarshals data into v, naming what failed.
func decode(data []byte, v codec.Unmarshaler, what string) error {
	if err := codec.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrMalformed, what, err)
	}
	return nil
}
