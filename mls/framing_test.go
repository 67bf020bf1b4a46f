package mls

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/quicproquo/qpq/mls/cipher"
	"github.com/quicproquo/qpq/mls/codec"
	"github.com/quicproquo/qpq/mls/internal/testvec"
)

// TestVectorMessageProtection runs message-protection.json.
func TestVectorMessageProtection(t *testing.T) {
	var cases []struct {
		CipherSuite             uint16 `json:"cipher_suite"`
		GroupID                 hx     `json:"group_id"`
		Epoch                   uint64
		TreeHash                hx `json:"tree_hash"`
		ConfirmedTranscriptHash hx `json:"confirmed_transcript_hash"`
		SignaturePriv           hx `json:"signature_priv"`
		SignaturePub            hx `json:"signature_pub"`
		EncryptionSecret        hx `json:"encryption_secret"`
		SenderDataSecret        hx `json:"sender_data_secret"`
		MembershipKey           hx `json:"membership_key"`
		Proposal                hx
		ProposalPub             hx `json:"proposal_pub"`
		ProposalPriv            hx `json:"proposal_priv"`
		Commit                  hx
		CommitPub               hx `json:"commit_pub"`
		CommitPriv              hx `json:"commit_priv"`
		Application             hx
		ApplicationPriv         hx `json:"application_priv"`
	}
	testvec.Load(t, "message-protection.json", &cases)
	tally := testvec.NewTally(t, "message-protection.json")
	for _, c := range cases {
		tally.Case(t, c.CipherSuite, fmt.Sprintf("suite=0x%04x", c.CipherSuite), func(t *testing.T) {
			s := suiteOrSkip(t, c.CipherSuite)
			gc := codec.Marshal(&GroupContext{
				Version: MLS10, CipherSuite: CipherSuite(c.CipherSuite), GroupID: c.GroupID, Epoch: c.Epoch,
				TreeHash: c.TreeHash, ConfirmedTranscriptHash: c.ConfirmedTranscriptHash,
			})
			signer, err := s.NewSigner(c.SignaturePriv)
			if err != nil {
				t.Fatal(err)
			}
			member := func(l LeafIndex) bool { return l < 2 }
			newTree := func() *secretTree { return newSecretTree(s, RatchetConfig{}, c.EncryptionSecret, 2) }
			// body returns the raw encoding the vector compares with.
			body := func(fc *FramedContent) []byte {
				var b codec.Builder
				fc.marshalBody(&b)
				return b.Bytes()
			}
			unprotect := func(field string, data []byte) *AuthenticatedContent {
				t.Helper()
				m, err := DecodeMLSMessage(data)
				if err != nil {
					t.Fatalf("%s: %v", field, err)
				}
				var ac *AuthenticatedContent
				switch m.WireFormat {
				case WireFormatPublicMessage:
					ac, err = fromPublic(s, m.PublicMessage, c.MembershipKey, gc)
				case WireFormatPrivateMessage:
					var d *decrypted
					st := newTree()
					d, err = fromPrivate(s, st, c.SenderDataSecret, m.PrivateMessage, member)
					if err == nil {
						ac = d.content
						d.consume(st)
					}
				}
				if err != nil {
					t.Fatalf("%s: unprotect: %v", field, err)
				}
				if err := verifyContent(parseKey(t, s, c.SignaturePub), ac, gc); err != nil {
					t.Fatalf("%s: %v", field, err)
				}
				if ac.Content.Sender != (Sender{Type: SenderTypeMember, Index: 1}) {
					t.Fatalf("%s: sender %+v, want member 1", field, ac.Content.Sender)
				}
				return ac
			}
			protect := func(field string, ct ContentType, raw []byte, wf WireFormat) ([]byte, error) {
				t.Helper()
				fc := FramedContent{
					GroupID: c.GroupID, Epoch: c.Epoch, Sender: Sender{Type: SenderTypeMember, Index: 1},
					AuthenticatedData: []byte("authenticated data"), ContentType: ct,
				}
				r := codec.NewReader(raw)
				fc.readBody(r)
				if err := r.Finish(); err != nil {
					t.Fatalf("%s: decode raw content: %v", field, err)
				}
				ac := &AuthenticatedContent{WireFormat: wf, Content: fc}
				if ac.Auth.Signature, err = signContent(signer, wf, &fc, gc); err != nil {
					t.Fatal(err)
				}
				if ct == ContentTypeCommit {
					ac.Auth.ConfirmationTag = s.MAC(make([]byte, s.Nh()), c.ConfirmedTranscriptHash)
				}
				msg := &MLSMessage{Version: MLS10, WireFormat: wf}
				if wf == WireFormatPublicMessage {
					msg.PublicMessage, err = toPublic(s, ac, c.MembershipKey, gc)
				} else {
					msg.PrivateMessage, err = toPrivate(s, newTree(), c.SenderDataSecret, ac, 7)
				}
				if err != nil {
					return nil, err
				}
				return msg.Encode(), nil
			}
			for _, m := range []struct {
				name       string
				ct         ContentType
				raw        []byte
				pub, priv  []byte
				publicFail bool
			}{
				{"proposal", ContentTypeProposal, c.Proposal, c.ProposalPub, c.ProposalPriv, false},
				{"commit", ContentTypeCommit, c.Commit, c.CommitPub, c.CommitPriv, false},
				{"application", ContentTypeApplication, appData(c.Application), nil, c.ApplicationPriv, true},
			} {
				if m.pub != nil {
					ac := unprotect(m.name+"_pub", m.pub)
					eq(t, m.name+"_pub content", body(&ac.Content), m.raw)
				}
				ac := unprotect(m.name+"_priv", m.priv)
				eq(t, m.name+"_priv content", body(&ac.Content), m.raw)

				enc, err := protect(m.name, m.ct, m.raw, WireFormatPublicMessage)
				if m.publicFail {
					if err == nil {
						t.Fatalf("%s: protecting as a PublicMessage succeeded", m.name)
					}
				} else {
					if err != nil {
						t.Fatalf("%s: protect as PublicMessage: %v", m.name, err)
					}
					eq(t, m.name+" own PublicMessage content", body(&unprotect(m.name+" own PublicMessage", enc).Content), m.raw)
				}
				enc, err = protect(m.name, m.ct, m.raw, WireFormatPrivateMessage)
				if err != nil {
					t.Fatalf("%s: protect as PrivateMessage: %v", m.name, err)
				}
				eq(t, m.name+" own PrivateMessage content", body(&unprotect(m.name+" own PrivateMessage", enc).Content), m.raw)
			}
		})
	}
}

// appData encodes application data as the body of a FramedContent.
func appData(data []byte) []byte {
	var b codec.Builder
	b.AddOpaque(data)
	return b.Bytes()
}

// TestPrivateMessageRejects checks that a replayed, tampered or mis-padded
// PrivateMessage is rejected.
func TestPrivateMessageRejects(t *testing.T) {
	s := suiteOrSkip(t, 1)
	signer, _ := s.GenerateSigner()
	secret := bytes.Repeat([]byte{1}, s.Nh())
	sds := bytes.Repeat([]byte{2}, s.Nh())
	gc := []byte("group context")
	member := func(l LeafIndex) bool { return l < 2 }
	fc := FramedContent{GroupID: []byte("g"), Epoch: 3, Sender: Sender{Type: SenderTypeMember, Index: 0},
		ContentType: ContentTypeApplication, ApplicationData: []byte("hello")}
	ac := &AuthenticatedContent{WireFormat: WireFormatPrivateMessage, Content: fc}
	ac.Auth.Signature, _ = signContent(signer, ac.WireFormat, &fc, gc)
	m, err := toPrivate(s, newSecretTree(s, RatchetConfig{}, secret, 2), sds, ac, 0)
	if err != nil {
		t.Fatal(err)
	}
	rx := newSecretTree(s, RatchetConfig{}, secret, 2)
	d, err := fromPrivate(s, rx, sds, m, member)
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyContent(parseKey(t, s, signer.Public()), d.content, gc); err != nil {
		t.Fatal(err)
	}
	d.consume(rx)
	if _, err := fromPrivate(s, rx, sds, m, member); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay: err = %v", err)
	}
	bad := *m
	bad.Ciphertext = clone(m.Ciphertext)
	bad.Ciphertext[len(bad.Ciphertext)-1] ^= 1
	if _, err := fromPrivate(s, newSecretTree(s, RatchetConfig{}, secret, 2), sds, &bad, member); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("tampered ciphertext: err = %v", err)
	}
	bad = *m
	bad.Epoch++
	if _, err := fromPrivate(s, newSecretTree(s, RatchetConfig{}, secret, 2), sds, &bad, member); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("changed epoch (AAD): err = %v", err)
	}
	if _, err := fromPrivate(s, newSecretTree(s, RatchetConfig{}, secret, 2), sds, m, func(LeafIndex) bool { return false }); !errors.Is(err, ErrNotMember) {
		t.Fatalf("sender not a member: err = %v", err)
	}
	// A signature by another key does not verify.
	other, _ := s.GenerateSigner()
	if err := verifyContent(parseKey(t, s, other.Public()), d.content, gc); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("wrong signer: err = %v", err)
	}
}

func parseKey(t *testing.T, s cipher.Suite, pub []byte) cipher.VerificationKey {
	t.Helper()
	k, err := s.ParseVerificationKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
