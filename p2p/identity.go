package p2p

import (
	"crypto/ed25519"
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// ErrNotEd25519 is returned for a peer ID that does not embed an Ed25519
// key, which no quicproquo node has.
var ErrNotEd25519 = errors.New("p2p: peer ID does not carry an Ed25519 identity key")

// PeerID returns the libp2p peer ID of an Ed25519 identity key. The ID
// embeds the key (an identity multihash), so IdentityKey inverts it.
func PeerID(identity ed25519.PublicKey) (peer.ID, error) {
	pub, err := crypto.UnmarshalEd25519PublicKey(identity)
	if err != nil {
		return "", fmt.Errorf("p2p: identity key: %w", err)
	}
	return peer.IDFromPublicKey(pub)
}

// IdentityKey returns the Ed25519 identity key a peer ID carries.
func IdentityKey(id peer.ID) (ed25519.PublicKey, error) {
	pub, err := id.ExtractPublicKey()
	if err != nil {
		return nil, fmt.Errorf("p2p: %w: %v", ErrNotEd25519, err)
	}
	if pub.Type() != crypto.Ed25519 {
		return nil, ErrNotEd25519
	}
	raw, err := pub.Raw()
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, ErrNotEd25519
	}
	return ed25519.PublicKey(raw), nil
}

func libp2pKey(priv ed25519.PrivateKey) (crypto.PrivKey, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, errors.New("p2p: Config.Identity must be a 64-byte Ed25519 private key")
	}
	return crypto.UnmarshalEd25519PrivateKey(priv)
}
