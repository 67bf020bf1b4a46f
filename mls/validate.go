package mls

import (
	"bytes"
	"fmt"
	"time"

	"github.com/quicproquo/qpq/mls/cipher"
	"github.com/quicproquo/qpq/mls/codec"
)

// leafCheck is the context a LeafNode is validated in (RFC 9420 §7.3).
type leafCheck struct {
	suite      cipher.Suite
	groupID    []byte
	extensions Extensions // the group context extensions it must support
	tree       *ratchetTree
	now        time.Time // zero: lifetimes are not checked
	source     LeafNodeSource
	leaf       LeafIndex // position, for update and commit leaves
	// replaces is the leaf being replaced (Update, Commit path), which is
	// exempt from the uniqueness check; -1 when none.
	replaces int64
	// credential is the application's authentication service (nil: none).
	credential func(Credential, []byte) error
}

// validateLeafNode checks n as §7.3 asks: source, signature, support for
// the group's extensions and required capabilities, credential types,
// lifetime, listed extensions, and unique keys within the tree.
func validateLeafNode(c *leafCheck, n *LeafNode) error {
	if n.Source != c.source {
		return fmt.Errorf("%w: source %d, want %d", ErrInvalidLeafNode, n.Source, c.source)
	}
	if err := verifyLeafSignature(c.suite, n, c.groupID, c.leaf); err != nil {
		return err
	}
	if err := checkSupports(&n.Capabilities, c.extensions); err != nil {
		return err
	}
	if !contains(n.Capabilities.Credentials, n.Credential.Type) {
		return fmt.Errorf("%w: credential type 0x%04x not in its own capabilities", ErrInvalidLeafNode, uint16(n.Credential.Type))
	}
	if c.credential != nil {
		if err := c.credential(n.Credential, n.SignatureKey); err != nil {
			return fmt.Errorf("%w: credential refused: %w", ErrInvalidLeafNode, err)
		}
	}
	for _, e := range n.Extensions {
		if !e.Type.isDefault() && !contains(n.Capabilities.Extensions, e.Type) {
			return fmt.Errorf("%w: extension 0x%04x not in its capabilities", ErrInvalidLeafNode, uint16(e.Type))
		}
	}
	if n.Source == LeafNodeSourceKeyPackage && !c.now.IsZero() {
		now := uint64(c.now.Unix())
		if now < n.Lifetime.NotBefore || now > n.Lifetime.NotAfter {
			return fmt.Errorf("%w: outside its lifetime [%d, %d]", ErrInvalidLeafNode, n.Lifetime.NotBefore, n.Lifetime.NotAfter)
		}
	}
	if c.tree == nil {
		return nil
	}
	var err error
	c.tree.members(func(l LeafIndex, m *LeafNode) {
		if err != nil || int64(l) == c.replaces {
			return
		}
		switch {
		case bytes.Equal(m.SignatureKey, n.SignatureKey):
			err = fmt.Errorf("%w: signature key already used by leaf %d", ErrInvalidLeafNode, l)
		case !contains(m.Capabilities.Credentials, n.Credential.Type):
			err = fmt.Errorf("%w: leaf %d does not support credential type 0x%04x", ErrInvalidLeafNode, l, uint16(n.Credential.Type))
		case !contains(n.Capabilities.Credentials, m.Credential.Type):
			err = fmt.Errorf("%w: does not support credential type 0x%04x of leaf %d", ErrInvalidLeafNode, uint16(m.Credential.Type), l)
		}
	})
	if err != nil {
		return err
	}
	for i, m := range c.tree.nodes {
		if int64(i) == 2*c.replaces {
			continue
		}
		if k := m.encryptionKey(); k != nil && bytes.Equal(k, n.EncryptionKey) {
			return fmt.Errorf("%w: encryption key already used by node %d", ErrInvalidLeafNode, i)
		}
	}
	return nil
}

// checkSupports checks that capabilities cover the non-default group
// context extensions and the group's required_capabilities.
func checkSupports(caps *Capabilities, ext Extensions) error {
	for _, e := range ext {
		if !e.Type.isDefault() && !contains(caps.Extensions, e.Type) {
			return fmt.Errorf("%w: group extension 0x%04x not supported", ErrInvalidLeafNode, uint16(e.Type))
		}
	}
	data, ok := ext.Find(ExtensionTypeRequiredCapabilities)
	if !ok {
		return nil
	}
	var rc RequiredCapabilities
	if err := codec.Unmarshal(data, &rc); err != nil {
		return fmt.Errorf("%w: required_capabilities: %v", ErrMalformed, err)
	}
	for _, t := range rc.ExtensionTypes {
		if !t.isDefault() && !contains(caps.Extensions, t) {
			return fmt.Errorf("%w: required extension 0x%04x not supported", ErrInvalidLeafNode, uint16(t))
		}
	}
	for _, t := range rc.ProposalTypes {
		if !t.isDefault() && !contains(caps.Proposals, t) {
			return fmt.Errorf("%w: required proposal 0x%04x not supported", ErrInvalidLeafNode, uint16(t))
		}
	}
	for _, t := range rc.CredentialTypes {
		if !contains(caps.Credentials, t) {
			return fmt.Errorf("%w: required credential 0x%04x not supported", ErrInvalidLeafNode, uint16(t))
		}
	}
	return nil
}

// validateKeyPackage checks a KeyPackage for use in a group with the given
// version and suite (RFC 9420 §10.1). c checks its leaf.
func validateKeyPackage(c *leafCheck, kp *KeyPackage, version ProtocolVersion) error {
	if kp.Version != version || kp.CipherSuite != c.suite.ID() {
		return fmt.Errorf("%w: version %d suite 0x%04x, group has %d and 0x%04x",
			ErrInvalidKeyPackage, kp.Version, uint16(kp.CipherSuite), version, uint16(c.suite.ID()))
	}
	if err := cipher.VerifyWithLabel(c.suite, kp.LeafNode.SignatureKey, labelKeyPackageTBS, kp.tbs(), kp.Signature); err != nil {
		return fmt.Errorf("%w: signature: %v", ErrInvalidKeyPackage, err)
	}
	if bytes.Equal(kp.InitKey, kp.LeafNode.EncryptionKey) {
		return fmt.Errorf("%w: init key equals the leaf's encryption key", ErrInvalidKeyPackage)
	}
	c.source = LeafNodeSourceKeyPackage
	if err := validateLeafNode(c, &kp.LeafNode); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidKeyPackage, err)
	}
	return nil
}

// ValidateKeyPackage checks a KeyPackage on its own, as a client does
// before using it (RFC 9420 §10.1): a supported suite, its signature and
// its leaf's signature, distinct init and encryption keys, a key_package
// leaf source, and (when now is not zero) its lifetime.
func ValidateKeyPackage(kp *KeyPackage, now time.Time) error {
	s, err := cipher.Lookup(kp.CipherSuite)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidKeyPackage, err)
	}
	return validateKeyPackage(&leafCheck{suite: s, now: now, replaces: -1}, kp, MLS10)
}
