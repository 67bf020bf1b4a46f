package p2p

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	ma "github.com/multiformats/go-multiaddr"
)

// LinkState is how this node is connected to a peer.
type LinkState int

const (
	LinkDown    LinkState = iota // no connection
	LinkRelayed                  // only through a circuit relay
	LinkDirect                   // a direct QUIC connection
)

func (s LinkState) String() string {
	switch s {
	case LinkDown:
		return "down"
	case LinkRelayed:
		return "relayed"
	case LinkDirect:
		return "direct"
	}
	return "unknown"
}

// LinkEvent reports a change of a peer's link state.
type LinkEvent struct {
	Peer     peer.ID
	Identity ed25519.PublicKey // nil if the peer's ID carries no Ed25519 key
	State    LinkState
	// Addr is the remote address of the connection that now carries the
	// link; nil when down.
	Addr ma.Multiaddr
}

// LinkConfig tunes how links are kept. The zero value of a field means
// its default.
type LinkConfig struct {
	// Heartbeat is how often a kept link is pinged (default 1 s).
	Heartbeat time.Duration
	// DeadAfter is how long a ping may go unanswered before its
	// connection is closed as dead (default 3 s). A dead path is thus
	// noticed within Heartbeat + DeadAfter.
	DeadAfter time.Duration
	// DialTimeout bounds one dial attempt (default 10 s).
	DialTimeout time.Duration
	// RedialMin and RedialMax bound the exponential backoff between
	// dials of a peer that is down (defaults 250 ms and 30 s).
	RedialMin, RedialMax time.Duration
	// DirectRetryMin and DirectRetryMax bound the backoff between direct
	// dials of a peer linked only through a relay (defaults 1 s and
	// 60 s). A direct connection, once up, replaces the relayed one.
	DirectRetryMin, DirectRetryMax time.Duration
}

func (c LinkConfig) withDefaults() LinkConfig {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Heartbeat, time.Second)
	def(&c.DeadAfter, 3*time.Second)
	def(&c.DialTimeout, 10*time.Second)
	def(&c.RedialMin, 250*time.Millisecond)
	def(&c.RedialMax, 30*time.Second)
	def(&c.DirectRetryMin, time.Second)
	def(&c.DirectRetryMax, time.Minute)
	c.RedialMax = max(c.RedialMax, c.RedialMin)
	c.DirectRetryMax = max(c.DirectRetryMax, c.DirectRetryMin)
	return c
}

// linkManager reports link states and keeps links to wanted peers up:
// one connection per peer (libp2p reuses it for every stream), a
// heartbeat that closes dead connections, redial with backoff, and
// upgrades from relayed to direct.
type linkManager struct {
	h   *Host
	cfg LinkConfig

	kick chan struct{} // buffered(1): some peer's connections changed

	mu       sync.Mutex // guards the fields below
	dirty    map[peer.ID]bool
	states   map[peer.ID]LinkState // last reported
	wanted   map[peer.ID]*wantedPeer
	retiring map[peer.ID]bool // relayed connections scheduled to close
	changed  chan struct{}    // closed and replaced on every reported change
}

type wantedPeer struct {
	id     peer.ID
	addrs  []ma.Multiaddr
	wake   chan struct{} // buffered(1): the peer's state changed
	cancel context.CancelFunc
}

func newLinkManager(h *Host) *linkManager {
	lm := &linkManager{
		h:        h,
		cfg:      h.cfg.Link,
		kick:     make(chan struct{}, 1),
		dirty:    make(map[peer.ID]bool),
		states:   make(map[peer.ID]LinkState),
		wanted:   make(map[peer.ID]*wantedPeer),
		retiring: make(map[peer.ID]bool),
		changed:  make(chan struct{}),
	}
	// Notifications run on swarm goroutines and must not block: they
	// only mark the peer for the event loop.
	h.h.Network().Notify(&network.NotifyBundle{
		ConnectedF:    func(_ network.Network, c network.Conn) { lm.markDirty(c.RemotePeer()) },
		DisconnectedF: func(_ network.Network, c network.Conn) { lm.markDirty(c.RemotePeer()) },
	})
	h.goroutine(lm.eventLoop)
	return lm
}

func (lm *linkManager) markDirty(p peer.ID) {
	lm.mu.Lock()
	lm.dirty[p] = true
	lm.mu.Unlock()
	select {
	case lm.kick <- struct{}{}:
	default:
	}
}

// current computes p's link state from its open connections, and the
// connection that carries the link.
func (lm *linkManager) current(p peer.ID) (LinkState, network.Conn) {
	st, best := LinkDown, network.Conn(nil)
	for _, c := range lm.h.h.Network().ConnsToPeer(p) {
		if c.IsClosed() {
			continue
		}
		if !isRelayed(c) {
			return LinkDirect, c
		}
		st, best = LinkRelayed, c
	}
	return st, best
}

func isRelayed(c network.Conn) bool {
	_, err := c.RemoteMultiaddr().ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}

// eventLoop turns connection changes into LinkEvents, in order, and
// closes relayed connections a direct one has made redundant.
func (lm *linkManager) eventLoop() {
	for {
		select {
		case <-lm.h.ctx.Done():
			return
		case <-lm.kick:
		}
		lm.mu.Lock()
		dirty := lm.dirty
		lm.dirty = make(map[peer.ID]bool)
		lm.mu.Unlock()
		for p := range dirty {
			st, conn := lm.current(p)
			if st == LinkDirect {
				lm.retireRelayed(p)
			}
			lm.mu.Lock()
			prev, known := lm.states[p]
			changed := !known && st != LinkDown || known && prev != st
			if st == LinkDown {
				delete(lm.states, p)
			} else {
				lm.states[p] = st
			}
			wp := lm.wanted[p]
			if changed {
				close(lm.changed)
				lm.changed = make(chan struct{})
			}
			lm.mu.Unlock()
			if !changed {
				continue
			}
			if wp != nil {
				select {
				case wp.wake <- struct{}{}:
				default:
				}
			}
			ev := LinkEvent{Peer: p, State: st}
			ev.Identity, _ = IdentityKey(p)
			if conn != nil {
				ev.Addr = conn.RemoteMultiaddr()
			}
			lm.h.log.Debug("link", "peer", p.ShortString(), "state", st, "addr", ev.Addr)
			if lm.h.cfg.OnLink != nil {
				lm.h.cfg.OnLink(ev)
			}
		}
	}
}

// relayedGrace is how long a relayed connection outlives the direct one
// that replaces it, so that calls in flight on it can finish; new RPC
// goes over the direct connection at once (Host.NodeService).
const relayedGrace = 5 * time.Second

// retireRelayed closes p's relayed connections after relayedGrace, if p
// still has a direct one then.
func (lm *linkManager) retireRelayed(p peer.ID) {
	lm.mu.Lock()
	if lm.retiring[p] || !slices.ContainsFunc(lm.h.h.Network().ConnsToPeer(p), isRelayed) {
		lm.mu.Unlock()
		return
	}
	lm.retiring[p] = true
	lm.mu.Unlock()
	lm.h.goroutine(func() {
		defer func() {
			lm.mu.Lock()
			delete(lm.retiring, p)
			lm.mu.Unlock()
		}()
		t := time.NewTimer(relayedGrace)
		defer t.Stop()
		select {
		case <-lm.h.ctx.Done():
			return
		case <-t.C:
		}
		if st, _ := lm.current(p); st != LinkDirect {
			return
		}
		for _, c := range lm.h.h.Network().ConnsToPeer(p) {
			if isRelayed(c) {
				lm.h.log.Debug("closing relayed connection, a direct one is up", "peer", p.ShortString())
				c.Close()
			}
		}
	})
}

// stateChanged returns a channel closed at the next reported change of
// any peer's state.
func (lm *linkManager) stateChanged() <-chan struct{} {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	return lm.changed
}

// AddPeer asks the host to keep a link to info.ID, at the given addresses
// (from mDNS, an endpoint record, a relay circuit address …), which
// replace any given before. The link is dialed at once, redialed with
// backoff while down, pinged while up, and upgraded to direct while
// relayed. Changes are reported to Config.OnLink.
func (h *Host) AddPeer(info peer.AddrInfo) {
	if info.ID == h.ID() {
		return
	}
	lm := h.links
	lm.mu.Lock()
	if wp, ok := lm.wanted[info.ID]; ok {
		wp.addrs = append([]ma.Multiaddr(nil), info.Addrs...)
		lm.mu.Unlock()
		select {
		case wp.wake <- struct{}{}:
		default:
		}
		return
	}
	ctx, cancel := context.WithCancel(h.ctx)
	wp := &wantedPeer{id: info.ID, addrs: append([]ma.Multiaddr(nil), info.Addrs...), wake: make(chan struct{}, 1), cancel: cancel}
	lm.wanted[info.ID] = wp
	lm.mu.Unlock()

	h.h.ConnManager().Protect(info.ID, "quicproquo-link")
	if !h.goroutine(func() { lm.keepUp(ctx, wp) }) || !h.goroutine(func() { lm.heartbeat(ctx, wp) }) {
		cancel()
	}
}

// RemovePeer stops keeping a link to id (see AddPeer). Open connections
// stay until idle.
func (h *Host) RemovePeer(id peer.ID) {
	lm := h.links
	lm.mu.Lock()
	wp, ok := lm.wanted[id]
	delete(lm.wanted, id)
	lm.mu.Unlock()
	if ok {
		wp.cancel()
		h.h.ConnManager().Unprotect(id, "quicproquo-link")
	}
}

// Wanted reports whether the host keeps a link to id (AddPeer, until
// RemovePeer).
func (h *Host) Wanted(id peer.ID) bool {
	h.links.mu.Lock()
	defer h.links.mu.Unlock()
	_, ok := h.links.wanted[id]
	return ok
}

// Link returns the current link state to id.
func (h *Host) Link(id peer.ID) LinkState {
	st, _ := h.links.current(id)
	return st
}

func (lm *linkManager) addrsOf(wp *wantedPeer) []ma.Multiaddr {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	return wp.addrs
}

// keepUp dials wp while it is down and tries a direct connection while
// it is relayed, each with its own backoff.
func (lm *linkManager) keepUp(ctx context.Context, wp *wantedPeer) {
	redial, direct := lm.cfg.RedialMin, lm.cfg.DirectRetryMin
	for ctx.Err() == nil {
		st, _ := lm.current(wp.id)
		switch st {
		case LinkDown:
			if err := lm.dial(ctx, wp, false); err == nil {
				redial = lm.cfg.RedialMin
				continue
			} else if ctx.Err() == nil {
				lm.h.log.Debug("dial failed", "peer", wp.id.ShortString(), "retry in", redial, "err", err)
			}
			lm.sleep(ctx, wp, redial)
			redial = min(2*redial, lm.cfg.RedialMax)
		case LinkRelayed:
			redial = lm.cfg.RedialMin
			if !lm.sleep(ctx, wp, direct) {
				continue // woken: the state changed, look again
			}
			if st, _ := lm.current(wp.id); st != LinkRelayed {
				continue
			}
			if err := lm.dial(ctx, wp, true); err == nil {
				direct = lm.cfg.DirectRetryMin
				lm.retireRelayed(wp.id)
				continue
			}
			direct = min(2*direct, lm.cfg.DirectRetryMax)
		case LinkDirect:
			redial, direct = lm.cfg.RedialMin, lm.cfg.DirectRetryMin
			select {
			case <-ctx.Done():
			case <-wp.wake:
			}
		}
	}
}

// sleep waits about d (±20%), or until wp's state changes or ctx ends. It
// reports whether the full time passed.
func (lm *linkManager) sleep(ctx context.Context, wp *wantedPeer, d time.Duration) bool {
	d = time.Duration(float64(d) * (0.8 + 0.4*mrand.Float64()))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-wp.wake:
		return false
	case <-ctx.Done():
		return false
	}
}

// dial connects to wp; direct restricts it to direct addresses.
func (lm *linkManager) dial(ctx context.Context, wp *wantedPeer, direct bool) error {
	ctx, cancel := context.WithTimeout(ctx, lm.cfg.DialTimeout)
	defer cancel()
	if direct {
		// Also bypasses the swarm's dial backoff.
		ctx = network.WithForceDirectDial(ctx, "quicproquo: upgrade a relayed link")
	} else {
		ctx = network.WithAllowLimitedConn(ctx, "quicproquo: a relayed link beats none")
		// Our own backoff paces these dials; the swarm's would hold back
		// a redial for up to minutes after the path comes back.
		if sw, ok := lm.h.h.Network().(*swarm.Swarm); ok {
			sw.Backoff().Clear(wp.id)
		}
	}
	return lm.h.h.Connect(ctx, peer.AddrInfo{ID: wp.id, Addrs: lm.addrsOf(wp)})
}

// heartbeat pings wp every Heartbeat while it is linked, and closes the
// connection a ping went out on if no answer comes within DeadAfter:
// QUIC alone would take its idle timeout (30 s) to notice.
func (lm *linkManager) heartbeat(ctx context.Context, wp *wantedPeer) {
	t := time.NewTicker(lm.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if st, _ := lm.current(wp.id); st == LinkDown {
			continue
		}
		conn, err := lm.ping(ctx, wp.id)
		if err == nil || ctx.Err() != nil {
			continue
		}
		if conn != nil && isTimeout(err) {
			lm.h.log.Info("link dead: no heartbeat answer", "peer", wp.id.ShortString(), "after", lm.cfg.DeadAfter, "addr", conn.RemoteMultiaddr())
			conn.Close()
		} else {
			lm.h.log.Debug("heartbeat failed", "peer", wp.id.ShortString(), "err", err)
		}
	}
}

// ping sends one libp2p ping on a fresh stream (the ping service ends
// streams after 30 s anyway) and returns the connection it used.
func (lm *linkManager) ping(ctx context.Context, p peer.ID) (network.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, lm.cfg.DeadAfter)
	defer cancel()
	s, err := lm.h.h.NewStream(network.WithAllowLimitedConn(ctx, "quicproquo heartbeat"), p, ping.ID)
	if err != nil {
		if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			// Could not even open a stream in time: blame the best
			// connection.
			_, c := lm.current(p)
			return c, os.ErrDeadlineExceeded
		}
		return nil, err
	}
	defer s.Reset()
	s.SetDeadline(time.Now().Add(lm.cfg.DeadAfter))
	var out, in [ping.PingSize]byte
	rand.Read(out[:])
	if _, err := s.Write(out[:]); err != nil {
		return s.Conn(), err
	}
	if _, err := io.ReadFull(s, in[:]); err != nil {
		return s.Conn(), err
	}
	if !bytes.Equal(in[:], out[:]) {
		return s.Conn(), errors.New("ping answer does not match")
	}
	return s.Conn(), nil
}

// isTimeout reports whether err is a deadline passing (QUIC streams say
// os.ErrDeadlineExceeded, yamux streams of relayed connections a
// net.Error with Timeout).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}
