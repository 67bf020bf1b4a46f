package cipher

import (
	"encoding/binary"
	"fmt"

	"github.com/quicproquo/qpq/mls/codec"
)

// labelPrefix starts every label MLS passes to a KDF, signature or HPKE.
const labelPrefix = "MLS 1.0 "

// labeled encodes struct { opaque label<V>; opaque content<V>; } with
// label = "MLS 1.0 " + label, the shape of SignContent, EncryptContext and
// RefHashInput (which has no prefix; see RefHash).
func labeled(label string, prefix bool, content []byte) []byte {
	b := codec.NewBuilder(len(labelPrefix) + len(label) + len(content) + 8)
	if prefix {
		b.AddVector(func(b *codec.Builder) {
			b.AddBytes([]byte(labelPrefix))
			b.AddBytes([]byte(label))
		})
	} else {
		b.AddString(label)
	}
	b.AddOpaque(content)
	return b.Bytes()
}

// ExpandWithLabel is KDF.Expand(secret, KDFLabel, length) with
// KDFLabel = struct { uint16 length; opaque label<V>; opaque context<V>; }
// (RFC 9420 §8). It fails only for a length the KDF cannot produce.
func ExpandWithLabel(s Suite, secret []byte, label string, context []byte, length int) ([]byte, error) {
	if length < 0 || length > 0xffff {
		return nil, fmt.Errorf("cipher: ExpandWithLabel length %d out of range", length)
	}
	if c, ok := s.(*composite); ok {
		return c.expandWithLabel(secret, label, context, length)
	}
	return s.Expand(secret, appendKDFLabel(nil, label, context, length), length)
}

// expandWithLabel is ExpandWithLabel with the KDFLabel on the stack: the
// secret tree derives several per message.
func (s *composite) expandWithLabel(secret []byte, label string, context []byte, length int) ([]byte, error) {
	var buf [128]byte
	info := appendKDFLabel(buf[:0], label, context, length)
	out, err := s.Expand(secret, info, length)
	clear(info)
	return out, err
}

// appendKDFLabel appends struct { uint16 length; opaque label<V>;
// opaque context<V>; } with label = "MLS 1.0 " + label.
func appendKDFLabel(dst []byte, label string, context []byte, length int) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(length))
	dst = codec.AppendVarint(dst, len(labelPrefix)+len(label))
	dst = append(dst, labelPrefix...)
	dst = append(dst, label...)
	dst = codec.AppendVarint(dst, len(context))
	return append(dst, context...)
}

// DeriveSecret is ExpandWithLabel(secret, label, "", Nh).
func DeriveSecret(s Suite, secret []byte, label string) ([]byte, error) {
	return ExpandWithLabel(s, secret, label, nil, s.Nh())
}

// DeriveTreeSecret is ExpandWithLabel(secret, label, generation, length)
// with the generation as a big-endian uint32 (RFC 9420 §9.1).
func DeriveTreeSecret(s Suite, secret []byte, label string, generation uint32, length int) ([]byte, error) {
	var ctx [4]byte
	binary.BigEndian.PutUint32(ctx[:], generation)
	return ExpandWithLabel(s, secret, label, ctx[:], length)
}

// RefHash is Hash(RefHashInput{label, value}) (RFC 9420 §5.2). The label
// is used as given, without the "MLS 1.0 " prefix.
func RefHash(s Suite, label string, value []byte) []byte {
	return s.Hash(labeled(label, false, value))
}

// MakeKeyPackageRef returns the KeyPackageRef of an encoded KeyPackage.
func MakeKeyPackageRef(s Suite, keyPackage []byte) []byte {
	return RefHash(s, "MLS 1.0 KeyPackage Reference", keyPackage)
}

// MakeProposalRef returns the ProposalRef of an encoded
// AuthenticatedContent carrying a proposal.
func MakeProposalRef(s Suite, authenticatedContent []byte) []byte {
	return RefHash(s, "MLS 1.0 Proposal Reference", authenticatedContent)
}

// SignWithLabel signs SignContent{"MLS 1.0 " + label, content} (RFC 9420
// §5.1.2).
func SignWithLabel(signer Signer, label string, content []byte) ([]byte, error) {
	return signer.Sign(labeled(label, true, content))
}

// SignWithLabelFunc is SignWithLabel of the bytes content writes, built
// in one buffer of about size bytes: for content that is itself an
// encoding (a FramedContentTBS with a KiB of application data) it saves
// building and copying it twice.
func SignWithLabelFunc(signer Signer, label string, size int, content func(b *codec.Builder)) ([]byte, error) {
	return signer.Sign(labeledFunc(label, size, content))
}

// VerifyWithLabelFunc checks a signature made by SignWithLabelFunc under a
// parsed key.
func VerifyWithLabelFunc(key VerificationKey, label string, size int, content func(b *codec.Builder), sig []byte) error {
	return key.Verify(labeledFunc(label, size, content), sig)
}

func labeledFunc(label string, size int, content func(b *codec.Builder)) []byte {
	b := codec.NewBuilder(len(labelPrefix) + len(label) + size + 10)
	b.AddVector(func(b *codec.Builder) {
		b.AddBytes([]byte(labelPrefix))
		b.AddBytes([]byte(label))
	})
	b.AddVector(content)
	return b.Bytes()
}

// VerifyWithLabel checks a signature made by SignWithLabel.
func VerifyWithLabel(s Suite, pub []byte, label string, content, sig []byte) error {
	return s.Verify(pub, labeled(label, true, content), sig)
}

// EncryptWithLabel is SealBase(pub, EncryptContext{"MLS 1.0 " + label,
// context}, "", plaintext) (RFC 9420 §5.1.3).
func EncryptWithLabel(s Suite, pub []byte, label string, context, plaintext []byte) (kemOutput, ciphertext []byte, err error) {
	return s.HPKESeal(pub, labeled(label, true, context), plaintext)
}

// DecryptWithLabel reverses EncryptWithLabel.
func DecryptWithLabel(s Suite, priv []byte, label string, context, kemOutput, ciphertext []byte) ([]byte, error) {
	return s.HPKEOpen(priv, kemOutput, labeled(label, true, context), ciphertext)
}
