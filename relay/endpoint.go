package relay

import (
	"encoding/json"
	"fmt"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/quicproquo/qpq/relay/store"
	"github.com/quicproquo/qpq/rpc/errcode"
)

// MaxEndpointAddrs bounds the addresses in a published nodeAddr.
const MaxEndpointAddrs = 32

// PeerID returns the libp2p peer ID of an Ed25519 identity key: the same
// fact as the key, in libp2p's notation.
func PeerID(identity store.Key) (peer.ID, error) {
	pub, err := crypto.UnmarshalEd25519PublicKey(identity[:])
	if err != nil {
		return "", err
	}
	return peer.IDFromPublicKey(pub)
}

// CheckEndpoint validates a nodeAddr published by identity: the JSON of a
// libp2p peer.AddrInfo whose ID is identity's peer ID, with at most
// MaxEndpointAddrs well-formed multiaddrs.
func CheckEndpoint(identity store.Key, nodeAddr []byte) error {
	var raw struct {
		ID    string
		Addrs []string
	}
	if err := json.Unmarshal(nodeAddr, &raw); err != nil {
		return errcode.New(errcode.InvalidArgument, "nodeAddr is not the JSON of a libp2p AddrInfo")
	}
	if len(raw.Addrs) > MaxEndpointAddrs {
		return errcode.Errorf(errcode.InvalidArgument, "nodeAddr has more than %d addresses", MaxEndpointAddrs)
	}
	var info peer.AddrInfo
	if err := info.UnmarshalJSON(nodeAddr); err != nil {
		return errcode.Errorf(errcode.InvalidArgument, "nodeAddr: %v", err)
	}
	want, err := PeerID(identity)
	if err != nil {
		return errcode.Errorf(errcode.InvalidArgument, "identity key: %v", err)
	}
	if info.ID != want {
		return errcode.New(errcode.InvalidArgument, fmt.Sprintf("nodeAddr names peer %s, not the caller's %s", info.ID, want))
	}
	return nil
}
