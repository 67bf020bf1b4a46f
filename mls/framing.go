package mls

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/quicproquo/qpq/mls/cipher"
	"github.com/quicproquo/qpq/mls/codec"
)

// Signature labels (RFC 9420 §17.6).
const (
	labelFramedContentTBS = "FramedContentTBS"
	labelLeafNodeTBS      = "LeafNodeTBS"
	labelKeyPackageTBS    = "KeyPackageTBS"
	labelGroupInfoTBS     = "GroupInfoTBS"
)

// HPKE labels (RFC 9420 §17.7).
const (
	labelUpdatePathNode = "UpdatePathNode"
	labelWelcome        = "Welcome"
)

// reuseGuardSize is the length of SenderData.reuse_guard.
const reuseGuardSize = 4

// framedContentTBS encodes FramedContentTBS; groupContext (encoded) is
// included for member and new_member_commit senders.
func framedContentTBS(wf WireFormat, c *FramedContent, groupContext []byte) []byte {
	b := codec.NewBuilder(tbsSize(c, groupContext))
	writeFramedContentTBS(b, wf, c, groupContext)
	return b.Bytes()
}

func writeFramedContentTBS(b *codec.Builder, wf WireFormat, c *FramedContent, groupContext []byte) {
	b.AddUint16(uint16(MLS10))
	b.AddUint16(uint16(wf))
	c.MarshalTLS(b)
	if c.Sender.Type == SenderTypeMember || c.Sender.Type == SenderTypeNewMemberCommit {
		b.AddBytes(groupContext)
	}
}

// tbsSize estimates the size of a FramedContentTBS, to allocate its buffer
// once: exact for application data, a start for the rest.
func tbsSize(c *FramedContent, groupContext []byte) int {
	return 64 + len(c.GroupID) + len(c.AuthenticatedData) + len(c.ApplicationData) + len(groupContext)
}

// signContent returns the FramedContentAuthData signature of c.
func signContent(signer cipher.Signer, wf WireFormat, c *FramedContent, groupContext []byte) ([]byte, error) {
	return cipher.SignWithLabelFunc(signer, labelFramedContentTBS, tbsSize(c, groupContext), func(b *codec.Builder) {
		writeFramedContentTBS(b, wf, c, groupContext)
	})
}

// verifyContent checks the signature of an AuthenticatedContent under key.
func verifyContent(key cipher.VerificationKey, ac *AuthenticatedContent, groupContext []byte) error {
	write := func(b *codec.Builder) { writeFramedContentTBS(b, ac.WireFormat, &ac.Content, groupContext) }
	if err := cipher.VerifyWithLabelFunc(key, labelFramedContentTBS, tbsSize(&ac.Content, groupContext), write, ac.Auth.Signature); err != nil {
		return fmt.Errorf("%w: content of %v sender: %v", ErrBadSignature, ac.Content.Sender.Type, err)
	}
	return nil
}

// membershipTag computes MAC(membership_key, AuthenticatedContentTBM).
func membershipTag(s cipher.Suite, membershipKey []byte, ac *AuthenticatedContent, groupContext []byte) []byte {
	var b codec.Builder
	b.AddBytes(framedContentTBS(ac.WireFormat, &ac.Content, groupContext))
	ac.Auth.marshal(&b, ac.Content.ContentType)
	return s.MAC(membershipKey, b.Bytes())
}

// toPublic wraps an AuthenticatedContent as a PublicMessage, adding the
// membership tag for member senders. Application data is never sent in the
// clear.
func toPublic(s cipher.Suite, ac *AuthenticatedContent, membershipKey, groupContext []byte) (*PublicMessage, error) {
	if ac.WireFormat != WireFormatPublicMessage {
		return nil, fmt.Errorf("mls: content framed for wire format %d, not a PublicMessage", ac.WireFormat)
	}
	if ac.Content.ContentType == ContentTypeApplication {
		return nil, errors.New("mls: application data must be sent as a PrivateMessage")
	}
	m := &PublicMessage{Content: ac.Content, Auth: ac.Auth}
	if ac.Content.Sender.Type == SenderTypeMember {
		m.MembershipTag = membershipTag(s, membershipKey, ac, groupContext)
	}
	return m, nil
}

// fromPublic checks a PublicMessage's membership tag (member senders) and
// returns its AuthenticatedContent. The signature is the caller's to check,
// since the key depends on the sender.
func fromPublic(s cipher.Suite, m *PublicMessage, membershipKey, groupContext []byte) (*AuthenticatedContent, error) {
	ac := &AuthenticatedContent{WireFormat: WireFormatPublicMessage, Content: m.Content, Auth: m.Auth}
	if m.Content.ContentType == ContentTypeApplication {
		return nil, fmt.Errorf("%w: application data in a PublicMessage", ErrMalformed)
	}
	if m.Content.Sender.Type == SenderTypeMember {
		if !equalSecret(membershipTag(s, membershipKey, ac, groupContext), m.MembershipTag) {
			return nil, ErrBadMembershipTag
		}
	}
	return ac, nil
}

// senderData is the decrypted SenderData of a PrivateMessage.
type senderData struct {
	leaf       LeafIndex
	generation uint32
	reuseGuard [reuseGuardSize]byte
}

func (d *senderData) marshal() []byte {
	var b codec.Builder
	b.AddUint32(uint32(d.leaf))
	b.AddUint32(d.generation)
	b.AddBytes(d.reuseGuard[:])
	return b.Bytes()
}

// senderDataAAD is SenderDataAAD: the first three fields of the message.
func senderDataAAD(m *PrivateMessage) []byte {
	var b codec.Builder
	b.AddOpaque(m.GroupID)
	b.AddUint64(m.Epoch)
	b.AddUint8(uint8(m.ContentType))
	return b.Bytes()
}

// privateContentAAD is PrivateContentAAD: SenderDataAAD and the
// authenticated data.
func privateContentAAD(m *PrivateMessage) []byte {
	b := codec.AppendVarint(senderDataAAD(m), len(m.AuthenticatedData))
	return append(b, m.AuthenticatedData...)
}

func kindOf(ct ContentType) ratchetKind {
	if ct == ContentTypeApplication {
		return applicationRatchet
	}
	return handshakeRatchet
}

// applyGuard XORs the reuse guard into the first bytes of a nonce copy.
func applyGuard(nonce []byte, guard [reuseGuardSize]byte) []byte {
	n := clone(nonce)
	for i := range guard {
		n[i] ^= guard[i]
	}
	return n
}

// toPrivate encrypts a member's AuthenticatedContent as a PrivateMessage
// with the next key of the sender's ratchet and padding zero bytes
// (RFC 9420 §6.3).
func toPrivate(s cipher.Suite, st *secretTree, senderDataSecret []byte, ac *AuthenticatedContent, padding int) (*PrivateMessage, error) {
	c := &ac.Content
	if ac.WireFormat != WireFormatPrivateMessage {
		return nil, fmt.Errorf("mls: content framed for wire format %d, not a PrivateMessage", ac.WireFormat)
	}
	if c.Sender.Type != SenderTypeMember {
		return nil, fmt.Errorf("mls: only members send PrivateMessages")
	}
	m := &PrivateMessage{
		GroupID:           c.GroupID,
		Epoch:             c.Epoch,
		ContentType:       c.ContentType,
		AuthenticatedData: c.AuthenticatedData,
	}
	// The plaintext is built with room for the AEAD tag and sealed in
	// place, so the ciphertext overwrites it.
	pt := codec.NewBuilder(len(c.ApplicationData) + len(ac.Auth.Signature) + padding + 64)
	c.marshalBody(pt)
	ac.Auth.marshal(pt, c.ContentType)
	pt.AddBytes(make([]byte, padding))

	sd := senderData{leaf: LeafIndex(c.Sender.Index)}
	if _, err := rand.Read(sd.reuseGuard[:]); err != nil {
		return nil, err
	}
	kn, gen, err := st.next(sd.leaf, kindOf(c.ContentType))
	if err != nil {
		return nil, err
	}
	defer kn.wipe()
	sd.generation = gen
	aead, err := s.NewAEAD(kn.key)
	if err != nil {
		return nil, err
	}
	plain := pt.Bytes()
	m.Ciphertext = aead.Seal(plain[:0], applyGuard(kn.nonce, sd.reuseGuard), plain, privateContentAAD(m))
	if cap(plain) < len(m.Ciphertext) {
		wipe(plain) // sealed into a new buffer after all
	}

	sdk := senderDataKeyNonce(s, senderDataSecret, m.Ciphertext)
	defer sdk.wipe()
	sdAEAD, err := s.NewAEAD(sdk.key)
	if err != nil {
		return nil, err
	}
	m.EncryptedSenderData = sdAEAD.Seal(nil, sdk.nonce, sd.marshal(), senderDataAAD(m))
	return m, nil
}

// decrypted is the result of decrypting a PrivateMessage. The ratchet
// moves (and the key that decrypted it is deleted) by consume, which the
// caller calls once the content's signature has verified; otherwise it
// calls discard and nothing changed.
type decrypted struct {
	content *AuthenticatedContent
	adv     *advance
}

// openSenderData decrypts a PrivateMessage's sender data.
func openSenderData(s cipher.Suite, senderDataSecret []byte, m *PrivateMessage) (senderData, error) {
	sdk := senderDataKeyNonce(s, senderDataSecret, m.Ciphertext)
	defer sdk.wipe()
	sdAEAD, err := s.NewAEAD(sdk.key)
	if err != nil {
		return senderData{}, err
	}
	raw, err := sdAEAD.Open(nil, sdk.nonce, m.EncryptedSenderData, senderDataAAD(m))
	if err != nil {
		return senderData{}, fmt.Errorf("%w: sender data", ErrDecrypt)
	}
	if len(raw) != 8+reuseGuardSize {
		return senderData{}, fmt.Errorf("%w: sender data of %d bytes", ErrMalformed, len(raw))
	}
	var sd senderData
	sd.leaf = LeafIndex(binary.BigEndian.Uint32(raw))
	sd.generation = binary.BigEndian.Uint32(raw[4:])
	copy(sd.reuseGuard[:], raw[8:])
	return sd, nil
}

// openContent decrypts a PrivateMessage's content with the key of its
// sender data's generation. The signature is the caller's to check.
func openContent(s cipher.Suite, st *secretTree, sd senderData, m *PrivateMessage) (*decrypted, error) {
	kn, adv, err := st.get(sd.leaf, kindOf(m.ContentType), sd.generation)
	if err != nil {
		return nil, err
	}
	aead, err := s.NewAEAD(kn.key)
	if err != nil {
		adv.discard()
		return nil, err
	}
	pt, err := aead.Open(nil, applyGuard(kn.nonce, sd.reuseGuard), m.Ciphertext, privateContentAAD(m))
	if err != nil {
		adv.discard()
		return nil, fmt.Errorf("%w: content", ErrDecrypt)
	}
	ac := &AuthenticatedContent{
		WireFormat: WireFormatPrivateMessage,
		Content: FramedContent{
			GroupID:           m.GroupID,
			Epoch:             m.Epoch,
			Sender:            Sender{Type: SenderTypeMember, Index: uint32(sd.leaf)},
			AuthenticatedData: m.AuthenticatedData,
			ContentType:       m.ContentType,
		},
	}
	r := codec.NewReader(pt)
	if m.ContentType == ContentTypeApplication {
		// The application data stays in the buffer it was decrypted into,
		// which is handed to the caller; no copy to wipe.
		ac.Content.ApplicationData = r.OpaqueNoCopy(MaxDataSize)
	} else {
		defer wipe(pt)
		ac.Content.readBody(r)
	}
	ac.Auth.read(r, m.ContentType)
	if err := r.Err(); err != nil {
		adv.discard()
		return nil, fmt.Errorf("%w: PrivateMessageContent: %w", ErrMalformed, err)
	}
	for _, p := range pt[len(pt)-r.Remaining():] {
		if p != 0 {
			adv.discard()
			return nil, fmt.Errorf("%w: non-zero padding", ErrMalformed)
		}
	}
	return &decrypted{content: ac, adv: adv}, nil
}

// fromPrivate decrypts a PrivateMessage. leafOK reports whether a leaf
// index names a member; the signature is the caller's to check.
func fromPrivate(s cipher.Suite, st *secretTree, senderDataSecret []byte, m *PrivateMessage, leafOK func(LeafIndex) bool) (*decrypted, error) {
	sd, err := openSenderData(s, senderDataSecret, m)
	if err != nil {
		return nil, err
	}
	if !leafOK(sd.leaf) {
		return nil, fmt.Errorf("%w: sender data names leaf %d", ErrNotMember, sd.leaf)
	}
	return openContent(s, st, sd, m)
}

// consume spends the message's key, once its content is authenticated.
func (d *decrypted) consume(st *secretTree) { st.consume(d.adv) }

// discard drops a message that was not accepted: the ratchet stays as it
// was.
func (d *decrypted) discard() { d.adv.discard() }
