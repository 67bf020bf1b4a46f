package peersvc

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"

	"github.com/quicproquo/qpq/internal/chanid"
	"github.com/quicproquo/qpq/rpc/errcode"
	"github.com/quicproquo/qpq/schema"
	bolt "go.etcd.io/bbolt"
)

// Who initiates a 1:1 channel (gets wasNew=true) is decided once per pair
// and recorded by both nodes:
//
//   - A node answering createChannel with no record makes the caller the
//     initiator, unless its own createChannel to the caller is in flight
//     (a simultaneous open): then the node with the bytewise lower
//     identity key is the initiator, which the other node concludes too.
//   - With a record, the answer repeats it: wasNew tells the caller
//     whether it is the initiator, on every call.
//   - OpenChannel, the calling side, returns the recorded role without a
//     call when a record exists; otherwise it calls and records the
//     answer. One OpenChannel per peer runs at a time.
//
// Why the pair agrees: if B's createChannel reaches A, B had no record
// when it started, so B started before it answered any call from A.
// Either A's own call is still in flight (both apply the key order) or A
// has recorded B's answer, which B gave under the same rule.

// answerCreateChannel decides and records the channel with caller for a
// createChannel that caller sent to this node.
func (s *Service) answerCreateChannel(caller ed25519.PublicKey) (Channel, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ch Channel
	err := s.store.db.Update(func(tx *bolt.Tx) error {
		var ok bool
		var err error
		if ch, ok, err = getChannel(tx, caller); err != nil || ok {
			return err
		}
		_, simultaneous := s.opening[string(caller)]
		ch = Channel{
			ID:            chanid.Derive(s.self, caller),
			Peer:          bytes.Clone(caller),
			SelfInitiates: simultaneous && bytes.Compare(s.self, caller) < 0,
		}
		return putChannel(tx, ch)
	})
	return ch, err
}

// OpenChannel returns this node's 1:1 channel with peer, creating it
// through remote (peer's NodeService over the P2P link) if this node has
// no record of it. wasNew reports whether this node is the channel's MLS
// initiator: it creates the group and sends the Welcome; otherwise it
// waits for the peer's Welcome. Both nodes always agree, also when both
// open at once.
func (s *Service) OpenChannel(ctx context.Context, peer ed25519.PublicKey, remote schema.NodeService) (ch Channel, wasNew bool, err error) {
	if len(peer) != ed25519.PublicKeySize {
		return Channel{}, false, errors.New("peersvc: peer must be a 32-byte Ed25519 public key")
	}
	if bytes.Equal(peer, s.self) {
		return Channel{}, false, errors.New("peersvc: a node has no channel with itself")
	}
	for {
		s.mu.Lock()
		ch, ok, err := s.store.Channel(peer)
		if err != nil || ok {
			s.mu.Unlock()
			return ch, ch.SelfInitiates, err
		}
		wait, busy := s.opening[string(peer)]
		if !busy {
			done := make(chan struct{})
			s.opening[string(peer)] = done
			s.mu.Unlock()
			ch, err := s.openChannel(ctx, peer, remote)
			s.mu.Lock()
			delete(s.opening, string(peer))
			close(done)
			s.mu.Unlock()
			return ch, ch.SelfInitiates, err
		}
		s.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return Channel{}, false, ctx.Err()
		}
	}
}

// openChannel calls createChannel on the peer and records its answer,
// unless the answering path recorded the channel meanwhile (a
// simultaneous open), in which case the two must agree.
func (s *Service) openChannel(ctx context.Context, peer ed25519.PublicKey, remote schema.NodeService) (Channel, error) {
	fut, release := remote.CreateChannel(ctx, func(p schema.NodeService_createChannel_Params) error {
		return p.SetPeerKey(peer)
	})
	res, err := fut.Struct()
	if err != nil {
		release()
		return Channel{}, fmt.Errorf("peersvc: createChannel: %w", err)
	}
	// Read the results before release frees them.
	id, err := res.ChannelId()
	wasNew := res.WasNew()
	id = bytes.Clone(id)
	release()
	if err != nil {
		return Channel{}, fmt.Errorf("peersvc: createChannel: %w", err)
	}
	want := chanid.Derive(s.self, peer)
	if !bytes.Equal(id, want[:]) {
		return Channel{}, errcode.Errorf(errcode.Internal, "peer answered createChannel with channel id %x, want %x", id, want)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	var ch Channel
	err = s.store.db.Update(func(tx *bolt.Tx) error {
		var ok bool
		var err error
		if ch, ok, err = getChannel(tx, peer); err != nil {
			return err
		}
		if ok {
			if ch.SelfInitiates != wasNew {
				return errcode.Errorf(errcode.Internal, "channel roles disagree with the peer (recorded self initiates=%v, peer says %v)", ch.SelfInitiates, wasNew)
			}
			return nil
		}
		ch = Channel{ID: want, Peer: bytes.Clone(peer), SelfInitiates: wasNew}
		return putChannel(tx, ch)
	})
	if err != nil {
		return Channel{}, fmt.Errorf("peersvc: recording channel: %w", err)
	}
	return ch, nil
}
