package mls

import (
	"github.com/quicproquo/qpq/mls/codec"
)

// Sender says who sent a FramedContent. Index is the leaf index of a member
// or the index into external_senders of an external sender.
type Sender struct {
	Type  SenderType
	Index uint32
}

// MarshalTLS implements codec.Marshaler.
func (s *Sender) MarshalTLS(b *codec.Builder) {
	b.AddUint8(uint8(s.Type))
	if s.Type == SenderTypeMember || s.Type == SenderTypeExternal {
		b.AddUint32(s.Index)
	}
}

// UnmarshalTLS implements codec.Unmarshaler.
func (s *Sender) UnmarshalTLS(r *codec.Reader) {
	s.Type = SenderType(r.Uint8())
	switch s.Type {
	case SenderTypeMember, SenderTypeExternal:
		s.Index = r.Uint32()
	case SenderTypeNewMemberProposal, SenderTypeNewMemberCommit:
	default:
		r.Failf("sender type %d", s.Type)
	}
}

// FramedContent is the content of a handshake or application message
// (RFC 9420 §6). Exactly one of ApplicationData, Proposal and Commit is
// meaningful, as ContentType says.
type FramedContent struct {
	GroupID           []byte
	Epoch             uint64
	Sender            Sender
	AuthenticatedData []byte
	ContentType       ContentType
	ApplicationData   []byte
	Proposal          Proposal
	Commit            *Commit
}

// marshalBody writes the content_type-selected part of FramedContent (and
// of PrivateMessageContent).
func (c *FramedContent) marshalBody(b *codec.Builder) {
	switch c.ContentType {
	case ContentTypeApplication:
		b.AddOpaque(c.ApplicationData)
	case ContentTypeProposal:
		marshalProposal(b, c.Proposal)
	case ContentTypeCommit:
		c.Commit.MarshalTLS(b)
	}
}

func (c *FramedContent) readBody(r *codec.Reader) {
	switch c.ContentType {
	case ContentTypeApplication:
		c.ApplicationData = r.Opaque(MaxDataSize)
	case ContentTypeProposal:
		c.Proposal = readProposal(r)
	case ContentTypeCommit:
		c.Commit = new(Commit)
		c.Commit.UnmarshalTLS(r)
	default:
		r.Failf("content type %d", c.ContentType)
	}
}

// MarshalTLS implements codec.Marshaler.
func (c *FramedContent) MarshalTLS(b *codec.Builder) {
	b.AddOpaque(c.GroupID)
	b.AddUint64(c.Epoch)
	c.Sender.MarshalTLS(b)
	b.AddOpaque(c.AuthenticatedData)
	b.AddUint8(uint8(c.ContentType))
	c.marshalBody(b)
}

// UnmarshalTLS implements codec.Unmarshaler.
func (c *FramedContent) UnmarshalTLS(r *codec.Reader) {
	c.GroupID = r.Opaque(MaxGroupIDSize)
	c.Epoch = r.Uint64()
	c.Sender.UnmarshalTLS(r)
	c.AuthenticatedData = r.Opaque(MaxDataSize)
	c.ContentType = ContentType(r.Uint8())
	c.readBody(r)
}

// FramedContentAuthData authenticates a FramedContent: its signature and,
// for a Commit, the confirmation tag.
type FramedContentAuthData struct {
	Signature       []byte
	ConfirmationTag []byte // commits only
}

func (a *FramedContentAuthData) marshal(b *codec.Builder, ct ContentType) {
	b.AddOpaque(a.Signature)
	if ct == ContentTypeCommit {
		b.AddOpaque(a.ConfirmationTag)
	}
}

func (a *FramedContentAuthData) read(r *codec.Reader, ct ContentType) {
	a.Signature = r.Opaque(MaxKeySize)
	if ct == ContentTypeCommit {
		a.ConfirmationTag = r.Opaque(MaxKeySize)
	}
}

// AuthenticatedContent is a FramedContent with its authentication and the
// wire format it travels in; proposal references and transcript hashes are
// computed over it.
type AuthenticatedContent struct {
	WireFormat WireFormat
	Content    FramedContent
	Auth       FramedContentAuthData
}

// MarshalTLS implements codec.Marshaler.
func (a *AuthenticatedContent) MarshalTLS(b *codec.Builder) {
	b.AddUint16(uint16(a.WireFormat))
	a.Content.MarshalTLS(b)
	a.Auth.marshal(b, a.Content.ContentType)
}

// UnmarshalTLS implements codec.Unmarshaler.
func (a *AuthenticatedContent) UnmarshalTLS(r *codec.Reader) {
	a.WireFormat = WireFormat(r.Uint16())
	a.Content.UnmarshalTLS(r)
	a.Auth.read(r, a.Content.ContentType)
}

// PublicMessage is a signed, unencrypted handshake message (RFC 9420 §6.2).
type PublicMessage struct {
	Content       FramedContent
	Auth          FramedContentAuthData
	MembershipTag []byte // member senders only
}

// MarshalTLS implements codec.Marshaler.
func (m *PublicMessage) MarshalTLS(b *codec.Builder) {
	m.Content.MarshalTLS(b)
	m.Auth.marshal(b, m.Content.ContentType)
	if m.Content.Sender.Type == SenderTypeMember {
		b.AddOpaque(m.MembershipTag)
	}
}

// UnmarshalTLS implements codec.Unmarshaler.
func (m *PublicMessage) UnmarshalTLS(r *codec.Reader) {
	m.Content.UnmarshalTLS(r)
	m.Auth.read(r, m.Content.ContentType)
	if m.Content.Sender.Type == SenderTypeMember {
		m.MembershipTag = r.Opaque(MaxKeySize)
	}
}

// PrivateMessage is an encrypted message (RFC 9420 §6.3).
type PrivateMessage struct {
	GroupID             []byte
	Epoch               uint64
	ContentType         ContentType
	AuthenticatedData   []byte
	EncryptedSenderData []byte
	Ciphertext          []byte
}

// MarshalTLS implements codec.Marshaler.
func (m *PrivateMessage) MarshalTLS(b *codec.Builder) {
	b.AddOpaque(m.GroupID)
	b.AddUint64(m.Epoch)
	b.AddUint8(uint8(m.ContentType))
	b.AddOpaque(m.AuthenticatedData)
	b.AddOpaque(m.EncryptedSenderData)
	b.AddOpaque(m.Ciphertext)
}

// UnmarshalTLS implements codec.Unmarshaler.
func (m *PrivateMessage) UnmarshalTLS(r *codec.Reader) {
	m.GroupID = r.Opaque(MaxGroupIDSize)
	m.Epoch = r.Uint64()
	m.ContentType = ContentType(r.Uint8())
	if !m.ContentType.valid() {
		r.Failf("content type %d", m.ContentType)
		return
	}
	m.AuthenticatedData = r.Opaque(MaxDataSize)
	m.EncryptedSenderData = r.Opaque(MaxKeySize)
	m.Ciphertext = r.Opaque(MaxDataSize)
}

// MLSMessage is the envelope of everything MLS sends (RFC 9420 §6). Exactly
// the field that WireFormat names is set.
type MLSMessage struct {
	Version        ProtocolVersion
	WireFormat     WireFormat
	PublicMessage  *PublicMessage
	PrivateMessage *PrivateMessage
	Welcome        *Welcome
	GroupInfo      *GroupInfo
	KeyPackage     *KeyPackage
}

// MarshalTLS implements codec.Marshaler.
func (m *MLSMessage) MarshalTLS(b *codec.Builder) {
	b.AddUint16(uint16(m.Version))
	b.AddUint16(uint16(m.WireFormat))
	switch m.WireFormat {
	case WireFormatPublicMessage:
		m.PublicMessage.MarshalTLS(b)
	case WireFormatPrivateMessage:
		m.PrivateMessage.MarshalTLS(b)
	case WireFormatWelcome:
		m.Welcome.MarshalTLS(b)
	case WireFormatGroupInfo:
		m.GroupInfo.MarshalTLS(b)
	case WireFormatKeyPackage:
		m.KeyPackage.MarshalTLS(b)
	}
}

// UnmarshalTLS implements codec.Unmarshaler. Only version mls10 is read.
func (m *MLSMessage) UnmarshalTLS(r *codec.Reader) {
	m.Version = ProtocolVersion(r.Uint16())
	if r.Err() == nil && m.Version != MLS10 {
		r.Failf("protocol version %d", m.Version)
		return
	}
	m.WireFormat = WireFormat(r.Uint16())
	switch m.WireFormat {
	case WireFormatPublicMessage:
		m.PublicMessage = new(PublicMessage)
		m.PublicMessage.UnmarshalTLS(r)
	case WireFormatPrivateMessage:
		m.PrivateMessage = new(PrivateMessage)
		m.PrivateMessage.UnmarshalTLS(r)
	case WireFormatWelcome:
		m.Welcome = new(Welcome)
		m.Welcome.UnmarshalTLS(r)
	case WireFormatGroupInfo:
		m.GroupInfo = new(GroupInfo)
		m.GroupInfo.UnmarshalTLS(r)
	case WireFormatKeyPackage:
		m.KeyPackage = new(KeyPackage)
		m.KeyPackage.UnmarshalTLS(r)
	default:
		r.Failf("wire format %d", m.WireFormat)
	}
}

// DecodeMLSMessage decodes an MLSMessage, checking syntax only.
func DecodeMLSMessage(data []byte) (*MLSMessage, error) {
	m := new(MLSMessage)
	if err := decode(data, m, "MLSMessage"); err != nil {
		return nil, err
	}
	return m, nil
}

// Encode returns the TLS encoding of m.
func (m *MLSMessage) Encode() []byte { return codec.Marshal(m) }
