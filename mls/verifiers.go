package mls

import (
	"bytes"
	"fmt"

	"github.com/quicproquo/qpq/mls/cipher"
)

// memberKeys keeps the parsed signature key of each member whose messages
// the group has checked, by leaf: parsing an Ed25519 key decompresses a
// curve point, which would otherwise be redone for every message. An
// entry is used only while the leaf still has the same encoded key (a
// member's Update or Commit path replaces it) and is replaced otherwise,
// so the cache holds at most one key per leaf of the tree; a leaf index
// gets here only once the tree (or a kept past epoch) names a member
// there.
type memberKeys map[LeafIndex]memberKey

type memberKey struct {
	pub []byte
	key cipher.VerificationKey
}

// verificationKey returns pub, the signature key of leaf l, parsed.
func (g *Group) verificationKey(l LeafIndex, pub []byte) (cipher.VerificationKey, error) {
	if k, ok := g.memberKeys[l]; ok && bytes.Equal(k.pub, pub) {
		return k.key, nil
	}
	key, err := g.suite.ParseVerificationKey(pub)
	if err != nil {
		return nil, err
	}
	if g.memberKeys == nil {
		g.memberKeys = memberKeys{}
	}
	g.memberKeys[l] = memberKey{pub: clone(pub), key: key}
	return key, nil
}

// verifySender checks the signature of ac under pub, the key senderKey
// found for its sender; a member's parsed key is kept.
func (g *Group) verifySender(pub []byte, ac *AuthenticatedContent, groupContext []byte) error {
	sender := ac.Content.Sender
	var key cipher.VerificationKey
	var err error
	if sender.Type == SenderTypeMember {
		key, err = g.verificationKey(LeafIndex(sender.Index), pub)
	} else {
		key, err = g.suite.ParseVerificationKey(pub)
	}
	if err != nil {
		return fmt.Errorf("%w: content of %v sender: %v", ErrBadSignature, sender.Type, err)
	}
	return verifyContent(key, ac, groupContext)
}
