package p2p

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// An endpoint record is how a node is found across the internet: the JSON
// of a libp2p peer.AddrInfo,
//
//	{"ID":"12D3KooW…","Addrs":["/ip4/198.51.100.7/udp/4001/quic-v1", "…/p2p/<relay>/p2p-circuit"]}
//
// published at the node's home server (publishEndpoint, as nodeAddr) and
// resolved by peers that know only its identity (resolveEndpoint).
const (
	// MaxEndpointRecord bounds a record, in bytes.
	MaxEndpointRecord = 8 << 10
	// MaxEndpointAddrs bounds the addresses in a record; EncodeEndpoint
	// keeps the most useful ones.
	MaxEndpointAddrs = 32
)

// ErrBadEndpoint reports an endpoint record that does not parse, breaks a
// limit, or belongs to another identity.
var ErrBadEndpoint = errors.New("p2p: bad endpoint record")

// Directory stores endpoint records: a home server's publishEndpoint and
// resolveEndpoint, which the node wires in. Methods may block on the
// network; they must be safe for concurrent use.
type Directory interface {
	// PublishEndpoint stores this node's record.
	PublishEndpoint(ctx context.Context, record []byte) error
	// ResolveEndpoint returns the record published by identity.
	ResolveEndpoint(ctx context.Context, identity ed25519.PublicKey) ([]byte, error)
}

// AddrSource gives the current endpoint of a node and a channel closed at
// its next change. *Host is one.
type AddrSource interface {
	Endpoint() (peer.AddrInfo, <-chan struct{})
}

var _ AddrSource = (*Host)(nil)

// EncodeEndpoint returns the canonical record of info: addresses
// deduplicated and ordered public first, then relay circuits, then
// private, then loopback, each group bytewise; at most MaxEndpointAddrs.
// Equal address sets give equal bytes, so a record is republished only
// when it really changed.
func EncodeEndpoint(info peer.AddrInfo) ([]byte, error) {
	if info.ID == "" {
		return nil, fmt.Errorf("%w: no peer ID", ErrBadEndpoint)
	}
	addrs := slices.Clone(info.Addrs)
	slices.SortFunc(addrs, func(a, b ma.Multiaddr) int {
		if ca, cb := addrClass(a), addrClass(b); ca != cb {
			return ca - cb
		}
		return bytes.Compare(a.Bytes(), b.Bytes())
	})
	addrs = slices.CompactFunc(addrs, func(a, b ma.Multiaddr) bool { return a.Equal(b) })
	if len(addrs) > MaxEndpointAddrs {
		addrs = addrs[:MaxEndpointAddrs]
	}
	rec, err := json.Marshal(peer.AddrInfo{ID: info.ID, Addrs: addrs})
	if err != nil {
		return nil, fmt.Errorf("p2p: encoding endpoint record: %w", err)
	}
	if len(rec) > MaxEndpointRecord {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrBadEndpoint, len(rec), MaxEndpointRecord)
	}
	return rec, nil
}

func addrClass(a ma.Multiaddr) int {
	switch {
	case isCircuit(a):
		return 1
	case manet.IsIPLoopback(a):
		return 3
	case manet.IsPrivateAddr(a) || manet.IsIP6LinkLocal(a):
		return 2
	}
	return 0
}

func isCircuit(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}

// DecodeEndpoint parses a record from the network and checks that it is
// identity's (if identity is not nil) and within the limits.
func DecodeEndpoint(record []byte, identity ed25519.PublicKey) (peer.AddrInfo, error) {
	if len(record) > MaxEndpointRecord {
		return peer.AddrInfo{}, fmt.Errorf("%w: %d bytes, at most %d", ErrBadEndpoint, len(record), MaxEndpointRecord)
	}
	var info peer.AddrInfo
	if err := json.Unmarshal(record, &info); err != nil {
		return peer.AddrInfo{}, fmt.Errorf("%w: %v", ErrBadEndpoint, err)
	}
	key, err := IdentityKey(info.ID)
	if err != nil {
		return peer.AddrInfo{}, fmt.Errorf("%w: %v", ErrBadEndpoint, err)
	}
	if identity != nil && !bytes.Equal(key, identity) {
		return peer.AddrInfo{}, fmt.Errorf("%w: it is %s's, not the asked identity's", ErrBadEndpoint, info.ID)
	}
	if len(info.Addrs) > MaxEndpointAddrs {
		return peer.AddrInfo{}, fmt.Errorf("%w: %d addresses, at most %d", ErrBadEndpoint, len(info.Addrs), MaxEndpointAddrs)
	}
	for _, a := range info.Addrs {
		// An address naming another peer as its final hop would send
		// our dial elsewhere.
		if id, err := peer.IDFromP2PAddr(a); err == nil && id != info.ID && !isCircuit(a) {
			return peer.AddrInfo{}, fmt.Errorf("%w: address %s names peer %s", ErrBadEndpoint, a, id)
		}
	}
	return info, nil
}

// Resolve fetches and checks the endpoint record of identity.
func Resolve(ctx context.Context, dir Directory, identity ed25519.PublicKey) (peer.AddrInfo, error) {
	rec, err := dir.ResolveEndpoint(ctx, identity)
	if err != nil {
		return peer.AddrInfo{}, err
	}
	return DecodeEndpoint(rec, identity)
}

// PublishConfig tunes Publish. The zero value of a field means its
// default.
type PublishConfig struct {
	// Settle is how long address changes are collected before one
	// publish (default 250 ms): a reservation and a new listen address
	// arriving together make one update.
	Settle time.Duration
	// Refresh republishes an unchanged record this often (default
	// 30 min), in case the directory lost it.
	Refresh time.Duration
	// RetryMin and RetryMax bound the backoff after a failed publish
	// (defaults 1 s and 5 min).
	RetryMin, RetryMax time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
}

// Publish publishes src's endpoint at dir when it starts and whenever the
// record changes, until ctx ends (it then returns ctx.Err()). A record
// equal to the last one published is not sent again before Refresh.
func Publish(ctx context.Context, src AddrSource, dir Directory, cfg PublishConfig) error {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.Settle, 250*time.Millisecond)
	def(&cfg.Refresh, 30*time.Minute)
	def(&cfg.RetryMin, time.Second)
	def(&cfg.RetryMax, 5*time.Minute)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}

	var last []byte
	var lastAt time.Time
	retry := cfg.RetryMin
	for {
		info, changed := src.Endpoint()
		rec, err := EncodeEndpoint(info)
		wait := cfg.Refresh
		switch {
		case err != nil:
			log.Error("cannot encode endpoint record", "err", err)
		case len(info.Addrs) == 0:
			// Nothing a peer could dial yet.
		case !bytes.Equal(rec, last) || time.Since(lastAt) >= cfg.Refresh:
			if err := dir.PublishEndpoint(ctx, rec); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				log.Info("publishing endpoint failed", "retry in", retry, "err", err)
				wait, retry = retry, min(2*retry, cfg.RetryMax)
				break
			}
			log.Debug("published endpoint", "addrs", len(info.Addrs))
			last, lastAt, retry = rec, time.Now(), cfg.RetryMin
		default:
			wait = cfg.Refresh - time.Since(lastAt)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		case <-changed:
			t.Stop()
			if !sleepCtx(ctx, cfg.Settle) {
				return ctx.Err()
			}
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
