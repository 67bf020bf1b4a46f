package mls

import (
	"crypto/subtle"

	"github.com/quicproquo/qpq/mls/cipher"
)

// expand is ExpandWithLabel for the fixed, small lengths the protocol uses
// internally (Nh, Nk, Nn), which HKDF-Expand always produces.
func expand(s cipher.Suite, secret []byte, label string, context []byte, length int) []byte {
	out, err := cipher.ExpandWithLabel(s, secret, label, context, length)
	if err != nil {
		panic("mls: ExpandWithLabel with fixed length failed: " + err.Error())
	}
	return out
}

// deriveSecret is DeriveSecret(secret, label).
func deriveSecret(s cipher.Suite, secret []byte, label string) []byte {
	return expand(s, secret, label, nil, s.Nh())
}

// deriveTree is DeriveTreeSecret for fixed lengths.
func deriveTree(s cipher.Suite, secret []byte, label string, generation uint32, length int) []byte {
	out, err := cipher.DeriveTreeSecret(s, secret, label, generation, length)
	if err != nil {
		panic("mls: DeriveTreeSecret with fixed length failed: " + err.Error())
	}
	return out
}

// wipe overwrites a secret that is no longer needed.
func wipe(b []byte) { clear(b) }

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}

// equalSecret compares secrets (MACs, tags) in constant time.
func equalSecret(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }
