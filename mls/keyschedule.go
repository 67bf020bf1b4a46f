package mls

import (
	"fmt"

	"github.com/quicproquo/qpq/mls/cipher"
	"github.com/quicproquo/qpq/mls/codec"
)

// epochSecrets are the secrets derived from one epoch_secret (RFC 9420 §8).
// The epoch_secret itself is not kept.
type epochSecrets struct {
	senderData    []byte // "sender data"
	encryption    []byte // "encryption", root of the secret tree
	exporter      []byte // "exporter"
	external      []byte // "external"
	confirmation  []byte // "confirm"
	membership    []byte // "membership"
	resumption    []byte // "resumption"
	authenticator []byte // "authentication"
	init          []byte // "init", for the next epoch
}

func (e *epochSecrets) wipe() {
	for _, s := range [][]byte{e.senderData, e.encryption, e.exporter, e.external,
		e.confirmation, e.membership, e.resumption, e.authenticator, e.init} {
		wipe(s)
	}
}

// MarshalTLS implements codec.Marshaler, for persisting group state.
func (e *epochSecrets) MarshalTLS(b *codec.Builder) {
	for _, s := range [][]byte{e.senderData, e.encryption, e.exporter, e.external,
		e.confirmation, e.membership, e.resumption, e.authenticator, e.init} {
		b.AddOpaque(s)
	}
}

// UnmarshalTLS implements codec.Unmarshaler.
func (e *epochSecrets) UnmarshalTLS(r *codec.Reader) {
	for _, p := range []*[]byte{&e.senderData, &e.encryption, &e.exporter, &e.external,
		&e.confirmation, &e.membership, &e.resumption, &e.authenticator, &e.init} {
		*p = r.Opaque(MaxKeySize)
	}
}

// joinerSecret computes
// ExpandWithLabel(Extract(init_secret, commit_secret), "joiner", GroupContext, Nh).
func joinerSecret(s cipher.Suite, initSecret, commitSecret, groupContext []byte) []byte {
	prk := s.Extract(initSecret, commitSecret)
	defer wipe(prk)
	return expand(s, prk, "joiner", groupContext, s.Nh())
}

// welcomeAndEpoch derives from the joiner secret and psk_secret the
// welcome_secret and the epoch's secrets.
func welcomeAndEpoch(s cipher.Suite, joiner, pskSecret, groupContext []byte) (welcome []byte, e epochSecrets) {
	member := s.Extract(joiner, pskSecret)
	defer wipe(member)
	welcome = deriveSecret(s, member, "welcome")
	epoch := expand(s, member, "epoch", groupContext, s.Nh())
	defer wipe(epoch)
	return welcome, deriveEpochSecrets(s, epoch)
}

// deriveEpochSecrets derives every secret of an epoch from its
// epoch_secret.
func deriveEpochSecrets(s cipher.Suite, epoch []byte) epochSecrets {
	return epochSecrets{
		senderData:    deriveSecret(s, epoch, "sender data"),
		encryption:    deriveSecret(s, epoch, "encryption"),
		exporter:      deriveSecret(s, epoch, "exporter"),
		external:      deriveSecret(s, epoch, "external"),
		confirmation:  deriveSecret(s, epoch, "confirm"),
		membership:    deriveSecret(s, epoch, "membership"),
		resumption:    deriveSecret(s, epoch, "resumption"),
		authenticator: deriveSecret(s, epoch, "authentication"),
		init:          deriveSecret(s, epoch, "init"),
	}
}

// welcomeKeyNonce derives the key and nonce that encrypt a Welcome's
// GroupInfo.
func welcomeKeyNonce(s cipher.Suite, welcome []byte) keyNonce {
	return keyNonce{
		key:   expand(s, welcome, "key", nil, s.KeySize()),
		nonce: expand(s, welcome, "nonce", nil, s.NonceSize()),
	}
}

// exportSecret is MLS-Exporter(label, context, length) (RFC 9420 §8.5).
func exportSecret(s cipher.Suite, exporterSecret []byte, label string, context []byte, length int) ([]byte, error) {
	if length < 0 || length > 255*s.Nh() || length > 0xffff {
		return nil, fmt.Errorf("mls: exporter length %d out of range", length)
	}
	derived := deriveSecret(s, exporterSecret, label)
	defer wipe(derived)
	return cipher.ExpandWithLabel(s, derived, "exported", s.Hash(context), length)
}

// externalKeyPair derives the group's external HPKE key pair from
// external_secret.
func externalKeyPair(s cipher.Suite, externalSecret []byte) (priv, pub []byte, err error) {
	return s.DeriveKEMKey(externalSecret)
}

// pskInput is one PSK and its ID for the psk_secret chain.
type pskInput struct {
	id     PreSharedKeyID
	secret []byte
}

// pskSecret chains PSKs into psk_secret (RFC 9420 §8.4); with none it is Nh
// zero bytes.
func pskSecret(s cipher.Suite, psks []pskInput) []byte {
	zero := make([]byte, s.Nh())
	acc := clone(zero)
	for i, p := range psks {
		extracted := s.Extract(zero, p.secret)
		var label codec.Builder
		p.id.MarshalTLS(&label)
		label.AddUint16(uint16(i))
		label.AddUint16(uint16(len(psks)))
		input := expand(s, extracted, "derived psk", label.Bytes(), s.Nh())
		next := s.Extract(input, acc)
		wipe(extracted)
		wipe(input)
		wipe(acc)
		acc = next
	}
	return acc
}
