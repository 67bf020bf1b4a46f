// Package chanid derives the identifier of the 1:1 channel between two
// identities.
//
// Both a home server (createChannel) and a node answering createChannel for
// itself over the P2P link use this derivation, so a DM between two people
// has one channel id whichever path carries it:
//
//	id = SHA-256("quicproquo/channel/v1" || lo || hi)[:16]
//
// where lo and hi are the two 32-byte Ed25519 identity keys in bytewise
// order, with the RFC 9562 version (8, custom) and variant bits set so the id
// is a well-formed UUID.
package chanid

import (
	"bytes"
	"crypto/sha256"
)

// Size is the length of a channel id in bytes.
const Size = 16

const label = "quicproquo/channel/v1"

// Derive returns the channel id of the unordered pair {a, b}.
func Derive(a, b []byte) [Size]byte {
	lo, hi := a, b
	if bytes.Compare(lo, hi) > 0 {
		lo, hi = hi, lo
	}
	h := sha256.New()
	h.Write([]byte(label))
	h.Write(lo)
	h.Write(hi)
	var id [Size]byte
	copy(id[:], h.Sum(nil))
	id[6] = id[6]&0x0f | 0x80 // version 8: custom
	id[8] = id[8]&0x3f | 0x80 // variant 10
	return id
}
