package mls

import (
	"fmt"

	"github.com/quicproquo/qpq/mls/cipher"
)

// verifyLeafSignature checks a LeafNode's signature; groupID and leaf bind
// update and commit leaves to their place.
func verifyLeafSignature(s cipher.Suite, n *LeafNode, groupID []byte, leaf LeafIndex) error {
	if err := cipher.VerifyWithLabel(s, n.SignatureKey, labelLeafNodeTBS, n.tbs(groupID, leaf), n.Signature); err != nil {
		return fmt.Errorf("%w: leaf %d signature: %v", ErrInvalidLeafNode, leaf, err)
	}
	return nil
}

// signLeaf signs n for its place in a group.
func signLeaf(signer cipher.Signer, n *LeafNode, groupID []byte, leaf LeafIndex) error {
	sig, err := cipher.SignWithLabel(signer, labelLeafNodeTBS, n.tbs(groupID, leaf))
	if err != nil {
		return err
	}
	n.Signature = sig
	return nil
}

// verifyLeafSignatures checks the signature of every leaf of the tree.
func (t *ratchetTree) verifyLeafSignatures(groupID []byte) error {
	var err error
	t.members(func(l LeafIndex, n *LeafNode) {
		if err == nil {
			err = verifyLeafSignature(t.suite, n, groupID, l)
		}
	})
	return err
}
