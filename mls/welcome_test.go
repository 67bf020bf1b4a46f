package mls

import (
	"fmt"
	"testing"

	"github.com/quicproquo/qpq/mls/codec"
	"github.com/quicproquo/qpq/mls/internal/testvec"
)

// TestVectorWelcome runs welcome.json.
func TestVectorWelcome(t *testing.T) {
	var cases []struct {
		CipherSuite uint16 `json:"cipher_suite"`
		InitPriv    hx     `json:"init_priv"`
		SignerPub   hx     `json:"signer_pub"`
		KeyPackage  hx     `json:"key_package"`
		Welcome     hx
	}
	testvec.Load(t, "welcome.json", &cases)
	tally := testvec.NewTally(t, "welcome.json")
	for _, c := range cases {
		tally.Case(t, c.CipherSuite, fmt.Sprintf("suite=0x%04x", c.CipherSuite), func(t *testing.T) {
			s := suiteOrSkip(t, c.CipherSuite)
			kpm, err := DecodeMLSMessage(c.KeyPackage)
			if err != nil || kpm.KeyPackage == nil {
				t.Fatalf("key_package: %v", err)
			}
			wm, err := DecodeMLSMessage(c.Welcome)
			if err != nil || wm.Welcome == nil {
				t.Fatalf("welcome: %v", err)
			}
			w := wm.Welcome
			e, err := w.findSecrets(keyPackageRef(s, kpm.KeyPackage))
			if err != nil {
				t.Fatal(err)
			}
			gs, err := openGroupSecrets(s, c.InitPriv, e, w.EncryptedGroupInfo)
			if err != nil {
				t.Fatal(err)
			}
			psk := pskSecret(s, nil)
			welcome, _ := welcomeAndEpoch(s, gs.JoinerSecret, psk, nil)
			gi, err := openGroupInfo(s, welcome, w.EncryptedGroupInfo)
			if err != nil {
				t.Fatal(err)
			}
			if err := verifyGroupInfo(s, gi, c.SignerPub); err != nil {
				t.Fatal(err)
			}
			_, es := welcomeAndEpoch(s, gs.JoinerSecret, psk, codec.Marshal(&gi.GroupContext))
			eq(t, "group_info.confirmation_tag", confirmationTag(s, es.confirmation, gi.GroupContext.ConfirmedTranscriptHash), gi.ConfirmationTag)
		})
	}
}
