package mls

import (
	"github.com/quicproquo/qpq/mls/cipher"
	"github.com/quicproquo/qpq/mls/codec"
)

// confirmedTranscriptHash is
// Hash(interim_transcript_hash || ConfirmedTranscriptHashInput) for a
// Commit's AuthenticatedContent (RFC 9420 §8.2).
func confirmedTranscriptHash(s cipher.Suite, interim []byte, ac *AuthenticatedContent) []byte {
	var b codec.Builder
	b.AddBytes(interim)
	b.AddUint16(uint16(ac.WireFormat))
	ac.Content.MarshalTLS(&b)
	b.AddOpaque(ac.Auth.Signature)
	return s.Hash(b.Bytes())
}

// interimTranscriptHash is
// Hash(confirmed_transcript_hash || InterimTranscriptHashInput).
func interimTranscriptHash(s cipher.Suite, confirmed, confirmationTag []byte) []byte {
	var b codec.Builder
	b.AddBytes(confirmed)
	b.AddOpaque(confirmationTag)
	return s.Hash(b.Bytes())
}

// confirmationTag is MAC(confirmation_key, confirmed_transcript_hash).
func confirmationTag(s cipher.Suite, confirmationKey, confirmed []byte) []byte {
	return s.MAC(confirmationKey, confirmed)
}
