package mls

import (
	"fmt"
	"testing"

	"github.com/quicproquo/qpq/mls/codec"
	"github.com/quicproquo/qpq/mls/internal/testvec"
)

// TestVectorKeySchedule runs key-schedule.json: every derived secret of
// every epoch, the group context, external_pub and an exported secret.
func TestVectorKeySchedule(t *testing.T) {
	var cases []struct {
		CipherSuite       uint16 `json:"cipher_suite"`
		GroupID           hx     `json:"group_id"`
		InitialInitSecret hx     `json:"initial_init_secret"`
		Epochs            []struct {
			TreeHash                hx `json:"tree_hash"`
			CommitSecret            hx `json:"commit_secret"`
			PSKSecret               hx `json:"psk_secret"`
			ConfirmedTranscriptHash hx `json:"confirmed_transcript_hash"`
			GroupContext            hx `json:"group_context"`
			JoinerSecret            hx `json:"joiner_secret"`
			WelcomeSecret           hx `json:"welcome_secret"`
			InitSecret              hx `json:"init_secret"`
			SenderDataSecret        hx `json:"sender_data_secret"`
			EncryptionSecret        hx `json:"encryption_secret"`
			ExporterSecret          hx `json:"exporter_secret"`
			EpochAuthenticator      hx `json:"epoch_authenticator"`
			ExternalSecret          hx `json:"external_secret"`
			ConfirmationKey         hx `json:"confirmation_key"`
			MembershipKey           hx `json:"membership_key"`
			ResumptionPSK           hx `json:"resumption_psk"`
			ExternalPub             hx `json:"external_pub"`
			Exporter                struct {
				Label   string
				Context hx
				Length  int
				Secret  hx
			}
		}
	}
	testvec.Load(t, "key-schedule.json", &cases)
	tally := testvec.NewTally(t, "key-schedule.json")
	for _, c := range cases {
		tally.Case(t, c.CipherSuite, fmt.Sprintf("suite=0x%04x", c.CipherSuite), func(t *testing.T) {
			s := suiteOrSkip(t, c.CipherSuite)
			init := c.InitialInitSecret
			for i, e := range c.Epochs {
				f := func(name string) string { return fmt.Sprintf("epochs[%d].%s", i, name) }
				gc := GroupContext{
					Version:                 MLS10,
					CipherSuite:             CipherSuite(c.CipherSuite),
					GroupID:                 c.GroupID,
					Epoch:                   uint64(i),
					TreeHash:                e.TreeHash,
					ConfirmedTranscriptHash: e.ConfirmedTranscriptHash,
				}
				gcBytes := codec.Marshal(&gc)
				eq(t, f("group_context"), gcBytes, e.GroupContext)
				joiner := joinerSecret(s, init, e.CommitSecret, gcBytes)
				eq(t, f("joiner_secret"), joiner, e.JoinerSecret)
				welcome, es := welcomeAndEpoch(s, joiner, e.PSKSecret, gcBytes)
				eq(t, f("welcome_secret"), welcome, e.WelcomeSecret)
				eq(t, f("init_secret"), es.init, e.InitSecret)
				eq(t, f("sender_data_secret"), es.senderData, e.SenderDataSecret)
				eq(t, f("encryption_secret"), es.encryption, e.EncryptionSecret)
				eq(t, f("exporter_secret"), es.exporter, e.ExporterSecret)
				eq(t, f("epoch_authenticator"), es.authenticator, e.EpochAuthenticator)
				eq(t, f("external_secret"), es.external, e.ExternalSecret)
				eq(t, f("confirmation_key"), es.confirmation, e.ConfirmationKey)
				eq(t, f("membership_key"), es.membership, e.MembershipKey)
				eq(t, f("resumption_psk"), es.resumption, e.ResumptionPSK)
				_, pub, err := externalKeyPair(s, es.external)
				if err != nil {
					t.Fatal(err)
				}
				eq(t, f("external_pub"), pub, e.ExternalPub)
				x := e.Exporter
				got, err := exportSecret(s, es.exporter, x.Label, x.Context, x.Length)
				if err != nil {
					t.Fatal(err)
				}
				eq(t, f("exporter.secret"), got, x.Secret)
				init = es.init
			}
		})
	}
}

// TestVectorPSKSecret runs psk_secret.json.
func TestVectorPSKSecret(t *testing.T) {
	var cases []struct {
		CipherSuite uint16 `json:"cipher_suite"`
		PSKs        []struct {
			PSKID    hx `json:"psk_id"`
			PSK      hx `json:"psk"`
			PSKNonce hx `json:"psk_nonce"`
		}
		PSKSecret hx `json:"psk_secret"`
	}
	testvec.Load(t, "psk_secret.json", &cases)
	tally := testvec.NewTally(t, "psk_secret.json")
	for i, c := range cases {
		tally.Case(t, c.CipherSuite, fmt.Sprintf("%d/suite=0x%04x/psks=%d", i, c.CipherSuite, len(c.PSKs)), func(t *testing.T) {
			s := suiteOrSkip(t, c.CipherSuite)
			var in []pskInput
			for _, p := range c.PSKs {
				in = append(in, pskInput{
					id:     PreSharedKeyID{Type: PSKTypeExternal, PSKID: p.PSKID, PSKNonce: p.PSKNonce},
					secret: p.PSK,
				})
			}
			eq(t, "psk_secret", pskSecret(s, in), c.PSKSecret)
		})
	}
}
