package mls

import "fmt"

// String methods for the types that hold secrets, so that printing one by
// mistake (%v, %+v, a log line) shows no key material.

func (epochSecrets) String() string { return "mls.epochSecrets{redacted}" }
func (keyNonce) String() string     { return "mls.keyNonce{redacted}" }
func (nodeKey) String() string      { return "mls.nodeKey{redacted}" }

func (p privateTree) String() string {
	return fmt.Sprintf("mls.privateTree{leaf: %d, %d keys redacted}", p.leaf, len(p.keys))
}

func (t secretTree) String() string {
	return fmt.Sprintf("mls.secretTree{%d leaves, redacted}", t.nLeaves)
}

func (k KeyPackageBundle) String() string {
	return fmt.Sprintf("mls.KeyPackageBundle{suite: %v, private keys redacted}", k.KeyPackage.CipherSuite)
}

func (g Group) String() string {
	return fmt.Sprintf("mls.Group{epoch: %d, leaf: %d, %d members, secrets redacted}", g.ctx.Epoch, g.priv.leaf, len(g.Members()))
}

func (g GroupSecrets) String() string { return "mls.GroupSecrets{redacted}" }
