package mls

import (
	"bytes"
	"fmt"

	"github.com/quicproquo/qpq/mls/cipher"
	"github.com/quicproquo/qpq/mls/codec"
)

// keyPackageRef returns MakeKeyPackageRef of kp.
func keyPackageRef(s cipher.Suite, kp *KeyPackage) []byte {
	return cipher.MakeKeyPackageRef(s, codec.Marshal(kp))
}

// findSecrets returns the entry of w addressed to the KeyPackage ref.
func (w *Welcome) findSecrets(ref []byte) (*EncryptedGroupSecrets, error) {
	for i := range w.Secrets {
		if bytes.Equal(w.Secrets[i].NewMember, ref) {
			return &w.Secrets[i], nil
		}
	}
	return nil, ErrNotForUs
}

// openGroupSecrets decrypts the GroupSecrets of one Welcome entry with the
// KeyPackage's init key.
func openGroupSecrets(s cipher.Suite, initPriv []byte, e *EncryptedGroupSecrets, encryptedGroupInfo []byte) (*GroupSecrets, error) {
	pt, err := cipher.DecryptWithLabel(s, initPriv, labelWelcome, encryptedGroupInfo,
		e.EncryptedGroupSecrets.KEMOutput, e.EncryptedGroupSecrets.Ciphertext)
	if err != nil {
		return nil, fmt.Errorf("%w: group secrets: %v", ErrDecrypt, err)
	}
	defer wipe(pt)
	gs := new(GroupSecrets)
	if err := decode(pt, gs, "GroupSecrets"); err != nil {
		return nil, err
	}
	return gs, nil
}

// sealGroupSecrets encrypts gs to a new member's init key.
func sealGroupSecrets(s cipher.Suite, initKey []byte, gs *GroupSecrets, encryptedGroupInfo []byte) (HPKECiphertext, error) {
	pt := codec.Marshal(gs)
	defer wipe(pt)
	kem, ct, err := cipher.EncryptWithLabel(s, initKey, labelWelcome, encryptedGroupInfo, pt)
	if err != nil {
		return HPKECiphertext{}, err
	}
	return HPKECiphertext{KEMOutput: kem, Ciphertext: ct}, nil
}

// openGroupInfo decrypts a Welcome's GroupInfo with the key derived from
// welcome_secret.
func openGroupInfo(s cipher.Suite, welcomeSecret, encryptedGroupInfo []byte) (*GroupInfo, error) {
	kn := welcomeKeyNonce(s, welcomeSecret)
	defer kn.wipe()
	aead, err := s.NewAEAD(kn.key)
	if err != nil {
		return nil, err
	}
	pt, err := aead.Open(nil, kn.nonce, encryptedGroupInfo, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: group info", ErrDecrypt)
	}
	gi := new(GroupInfo)
	if err := decode(pt, gi, "GroupInfo"); err != nil {
		return nil, err
	}
	return gi, nil
}

// sealGroupInfo encrypts a GroupInfo for a Welcome.
func sealGroupInfo(s cipher.Suite, welcomeSecret []byte, gi *GroupInfo) ([]byte, error) {
	kn := welcomeKeyNonce(s, welcomeSecret)
	defer kn.wipe()
	aead, err := s.NewAEAD(kn.key)
	if err != nil {
		return nil, err
	}
	return aead.Seal(nil, kn.nonce, codec.Marshal(gi), nil), nil
}

// verifyGroupInfo checks a GroupInfo's signature under the signer's key.
func verifyGroupInfo(s cipher.Suite, gi *GroupInfo, signerKey []byte) error {
	if err := cipher.VerifyWithLabel(s, signerKey, labelGroupInfoTBS, gi.tbs(), gi.Signature); err != nil {
		return fmt.Errorf("%w: group info: %v", ErrBadSignature, err)
	}
	return nil
}

// signGroupInfo signs gi.
func signGroupInfo(signer cipher.Signer, gi *GroupInfo) error {
	sig, err := cipher.SignWithLabel(signer, labelGroupInfoTBS, gi.tbs())
	if err != nil {
		return err
	}
	gi.Signature = sig
	return nil
}
