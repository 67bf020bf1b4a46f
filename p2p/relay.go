package p2p

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	relayclient "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Relay service defaults (circuit relay v2).
const (
	DefaultRelayMaxReservations      = 128
	DefaultRelayMaxReservationsPerIP = 8
	DefaultRelayMaxCircuits          = 16
	DefaultRelayReservationTTL       = time.Hour
	DefaultRelayConnDuration         = 10 * time.Minute
	DefaultRelayConnData             = 4 << 20
)

// RelayServiceConfig configures the circuit relay v2 service a home server
// runs for nodes that cannot reach each other directly. Every resource is
// bounded; the zero value of a field means its Default.
type RelayServiceConfig struct {
	Enable bool
	// MaxReservations bounds reservations held at once, and
	// MaxReservationsPerIP those from one IP address.
	MaxReservations, MaxReservationsPerIP int
	// MaxCircuits bounds relayed connections open per peer.
	MaxCircuits int
	// ReservationTTL is how long a reservation lasts unless refreshed
	// (nodes refresh at three quarters of it).
	ReservationTTL time.Duration
	// ConnDuration and ConnData bound one relayed connection: it is reset
	// after this long or after this many bytes in either direction.
	// Nodes redial a reset link, and replace it with a direct one as soon
	// as they can.
	ConnDuration time.Duration
	ConnData     int64
	// ACL decides who may reserve and connect; nil allows any peer.
	ACL relayv2.ACLFilter
}

func newRelayService(h host.Host, c RelayServiceConfig) (*relayv2.Relay, error) {
	rc := relayv2.DefaultResources()
	set := func(dst *int, v, def int) {
		if v > 0 {
			*dst = v
		} else {
			*dst = def
		}
	}
	set(&rc.MaxReservations, c.MaxReservations, DefaultRelayMaxReservations)
	set(&rc.MaxReservationsPerIP, c.MaxReservationsPerIP, DefaultRelayMaxReservationsPerIP)
	set(&rc.MaxCircuits, c.MaxCircuits, DefaultRelayMaxCircuits)
	rc.ReservationTTL = DefaultRelayReservationTTL
	if c.ReservationTTL > 0 {
		rc.ReservationTTL = c.ReservationTTL
	}
	rc.Limit = &relayv2.RelayLimit{Duration: DefaultRelayConnDuration, Data: DefaultRelayConnData}
	if c.ConnDuration > 0 {
		rc.Limit.Duration = c.ConnDuration
	}
	if c.ConnData > 0 {
		rc.Limit.Data = c.ConnData
	}
	opts := []relayv2.Option{relayv2.WithResources(rc)}
	if c.ACL != nil {
		opts = append(opts, relayv2.WithACL(c.ACL))
	}
	r, err := relayv2.New(h, opts...)
	if err != nil {
		return nil, fmt.Errorf("p2p: relay service: %w", err)
	}
	return r, nil
}

// addrBook tracks the addresses a node advertises: its listen addresses
// and a circuit address through every relay it holds a reservation at.
type addrBook struct {
	h *Host

	relayMu sync.Mutex // serializes AddRelay and RemoveRelay

	mu       sync.Mutex // guards the fields below
	circuits map[peer.ID][]ma.Multiaddr
	relays   map[peer.ID]*reservation
	changed  chan struct{} // closed and replaced on every change
}

// reservation is the loop that keeps a reservation at one relay.
type reservation struct {
	info   peer.AddrInfo
	cancel context.CancelFunc
	done   chan struct{} // closed when the loop has ended
}

func newAddrBook(h *Host) *addrBook {
	return &addrBook{h: h, circuits: make(map[peer.ID][]ma.Multiaddr),
		relays: make(map[peer.ID]*reservation), changed: make(chan struct{})}
}

func (b *addrBook) signal() {
	b.mu.Lock()
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

// start follows libp2p's own address changes (listen addresses coming up,
// interfaces changing, observed addresses).
func (b *addrBook) start() error {
	sub, err := b.h.h.EventBus().Subscribe(new(event.EvtLocalAddressesUpdated))
	if err != nil {
		return fmt.Errorf("p2p: subscribing to address changes: %w", err)
	}
	if !b.h.goroutine(func() {
		defer sub.Close()
		for {
			select {
			case <-b.h.ctx.Done():
				return
			case _, ok := <-sub.Out():
				if !ok {
					return
				}
				b.signal()
			}
		}
	}) {
		sub.Close()
	}
	return nil
}

// AddrInfo returns this node's peer ID and the addresses peers can dial it
// at: its listen addresses (without loopback and link-local ones, unless
// there is nothing else) and a circuit address per relay reservation.
func (h *Host) AddrInfo() peer.AddrInfo {
	var direct, local []ma.Multiaddr
	for _, a := range h.h.Addrs() {
		if _, err := a.ValueForProtocol(ma.P_CIRCUIT); err == nil {
			continue
		}
		if manet.IsIPLoopback(a) || manet.IsIP6LinkLocal(a) {
			local = append(local, a)
			continue
		}
		direct = append(direct, a)
	}
	if len(direct) == 0 {
		direct = local
	}
	b := h.addrs
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.circuits {
		direct = append(direct, c...)
	}
	return peer.AddrInfo{ID: h.ID(), Addrs: direct}
}

// AddrsChanged returns a channel that is closed when AddrInfo may have
// changed. Take it before reading AddrInfo.
func (h *Host) AddrsChanged() <-chan struct{} {
	h.addrs.mu.Lock()
	defer h.addrs.mu.Unlock()
	return h.addrs.changed
}

// Endpoint returns AddrInfo and a channel closed at its next change; it
// makes Host an AddrSource for Publish.
func (h *Host) Endpoint() (peer.AddrInfo, <-chan struct{}) {
	ch := h.AddrsChanged()
	return h.AddrInfo(), ch
}

// AddRelay makes r one of this node's relays (as Config.Relays does): the
// host keeps a link to it and a reservation there, and advertises a
// circuit address through it. Adding a relay again with other addresses
// replaces them.
func (h *Host) AddRelay(r peer.AddrInfo) {
	if r.ID == h.ID() {
		return
	}
	b := h.addrs
	b.relayMu.Lock()
	defer b.relayMu.Unlock()
	b.mu.Lock()
	old := b.relays[r.ID]
	b.mu.Unlock()
	if old != nil {
		if sameAddrs(old.info.Addrs, r.Addrs) {
			return
		}
		b.stopReservation(old)
	}
	h.AddPeer(r)
	ctx, cancel := context.WithCancel(h.ctx)
	res := &reservation{info: r, cancel: cancel, done: make(chan struct{})}
	if !h.goroutine(func() {
		defer close(res.done)
		b.reserveLoop(ctx, r)
	}) {
		cancel()
		return
	}
	b.mu.Lock()
	b.relays[r.ID] = res
	b.mu.Unlock()
}

// stopReservation ends res's loop and waits for it (its circuit addresses
// are gone then). b.relayMu must be held.
func (b *addrBook) stopReservation(res *reservation) {
	res.cancel()
	<-res.done
}

func (b *addrBook) reserveLoop(ctx context.Context, r peer.AddrInfo) {
	const minBackoff, maxBackoff = time.Second, time.Minute
	backoff := minBackoff
	defer b.setCircuits(r.ID, nil)
	for {
		// A reservation needs a direct link to the relay; the link
		// manager keeps one up (relays are wanted peers).
		if !b.waitState(ctx, r.ID, func(st LinkState) bool { return st == LinkDirect }) {
			return
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		rsvp, err := relayclient.Reserve(rctx, b.h.h, r)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			b.h.log.Info("relay reservation failed", "relay", r.ID.ShortString(), "retry in", backoff, "err", err)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		backoff = minBackoff
		b.setCircuits(r.ID, circuitAddrs(r, b.h.h.Peerstore().Addrs(r.ID)))
		b.h.log.Debug("relay reservation", "relay", r.ID.ShortString(), "expires", rsvp.Expiration)

		// Hold it until it is time to refresh, or until the link to the
		// relay goes (the relay drops the reservation with it).
		refresh := time.NewTimer(max(time.Until(rsvp.Expiration)*3/4, time.Second))
		lost := make(chan bool, 1)
		wctx, stop := context.WithCancel(ctx)
		go func() { lost <- b.waitState(wctx, r.ID, func(st LinkState) bool { return st != LinkDirect }) }()
		var isLost bool
		select {
		case <-refresh.C:
			stop()
			isLost = <-lost
		case isLost = <-lost:
			stop()
		}
		refresh.Stop()
		if isLost {
			b.setCircuits(r.ID, nil)
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// waitState waits until pred holds for relay's link state; false if ctx
// ends first.
func (b *addrBook) waitState(ctx context.Context, id peer.ID, pred func(LinkState) bool) bool {
	for {
		changed := b.h.links.stateChanged()
		if st, _ := b.h.links.current(id); pred(st) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-changed:
		}
	}
}

func (b *addrBook) setCircuits(relay peer.ID, addrs []ma.Multiaddr) {
	b.mu.Lock()
	old := b.circuits[relay]
	if addrs == nil {
		delete(b.circuits, relay)
	} else {
		b.circuits[relay] = addrs
	}
	b.mu.Unlock()
	if !sameAddrs(old, addrs) {
		b.signal()
	}
}

// circuitAddrs returns <relay addr>/p2p/<relay>/p2p-circuit for each of
// the relay's addresses (those configured, else those known).
func circuitAddrs(r peer.AddrInfo, known []ma.Multiaddr) []ma.Multiaddr {
	base := r.Addrs
	if len(base) == 0 {
		base = known
	}
	suffix := ma.StringCast("/p2p/" + r.ID.String() + "/p2p-circuit")
	out := make([]ma.Multiaddr, 0, len(base))
	for _, a := range base {
		out = append(out, a.Encapsulate(suffix))
	}
	return out
}

func sameAddrs(a, b []ma.Multiaddr) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}
