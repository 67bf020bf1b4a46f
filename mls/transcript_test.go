package mls

import (
	"fmt"
	"testing"

	"github.com/quicproquo/qpq/mls/codec"
	"github.com/quicproquo/qpq/mls/internal/testvec"
)

// TestVectorTranscriptHashes runs transcript-hashes.json.
func TestVectorTranscriptHashes(t *testing.T) {
	var cases []struct {
		CipherSuite                  uint16 `json:"cipher_suite"`
		ConfirmationKey              hx     `json:"confirmation_key"`
		AuthenticatedContent         hx     `json:"authenticated_content"`
		InterimTranscriptHashBefore  hx     `json:"interim_transcript_hash_before"`
		ConfirmedTranscriptHashAfter hx     `json:"confirmed_transcript_hash_after"`
		InterimTranscriptHashAfter   hx     `json:"interim_transcript_hash_after"`
	}
	testvec.Load(t, "transcript-hashes.json", &cases)
	tally := testvec.NewTally(t, "transcript-hashes.json")
	for _, c := range cases {
		tally.Case(t, c.CipherSuite, fmt.Sprintf("suite=0x%04x", c.CipherSuite), func(t *testing.T) {
			s := suiteOrSkip(t, c.CipherSuite)
			var ac AuthenticatedContent
			if err := codec.Unmarshal(c.AuthenticatedContent, &ac); err != nil {
				t.Fatalf("authenticated_content: %v", err)
			}
			if ac.Content.ContentType != ContentTypeCommit {
				t.Fatalf("authenticated_content carries content type %d, not a commit", ac.Content.ContentType)
			}
			confirmed := confirmedTranscriptHash(s, c.InterimTranscriptHashBefore, &ac)
			eq(t, "confirmed_transcript_hash_after", confirmed, c.ConfirmedTranscriptHashAfter)
			eq(t, "auth.confirmation_tag", confirmationTag(s, c.ConfirmationKey, confirmed), ac.Auth.ConfirmationTag)
			eq(t, "interim_transcript_hash_after", interimTranscriptHash(s, confirmed, ac.Auth.ConfirmationTag), c.InterimTranscriptHashAfter)
		})
	}
}
