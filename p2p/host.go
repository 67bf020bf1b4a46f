package p2p

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/quicproquo/qpq/rpc/twoparty"
	"github.com/quicproquo/qpq/schema"
)

// ProtocolID is the libp2p protocol that carries NodeService RPC between
// nodes.
const ProtocolID protocol.ID = "/quicproquo/p2p/1"

// Limits of the link.
const (
	// MaxRPCMessage bounds one Cap'n Proto message read from a peer.
	MaxRPCMessage = 8 << 20
	// DefaultMaxPeers is the connection manager's high-water mark when
	// Config.MaxPeers is zero; wanted peers and relays are never trimmed.
	DefaultMaxPeers = 256

	userAgent = "quicproquo/1"
)

// ErrClosed is returned by a Host after Close.
var ErrClosed = errors.New("p2p: host closed")

// Config configures a Host. Only Identity and ListenAddrs are required.
type Config struct {
	// Identity is the node's Ed25519 identity key; its peer ID is
	// PeerID(Identity.Public()).
	Identity ed25519.PrivateKey
	// ListenAddrs are the QUIC addresses to listen on, such as
	// /ip4/192.0.2.1/udp/0/quic-v1. There is no default: the node says
	// which interfaces it uses.
	ListenAddrs []ma.Multiaddr
	// Service returns the NodeService capability offered to one
	// authenticated caller on ProtocolID (peersvc.Service.Client). Nil
	// means the host serves no RPC, only dials.
	Service func(caller ed25519.PublicKey) capnp.Client
	// Relays are home servers whose circuit relay this node keeps a
	// reservation at, so that peers who cannot reach it directly reach
	// it through them. They are kept linked like AddPeer's peers.
	// AddRelay adds relays later.
	Relays []peer.AddrInfo
	// RelayService makes this host a circuit relay for others (home
	// servers).
	RelayService RelayServiceConfig
	// Link tunes keepalive, dead-path detection and redialing.
	Link LinkConfig
	// OnLink, if set, receives every change of a peer's link state, in
	// order, from one goroutine. It must not block for long.
	OnLink func(LinkEvent)
	// MaxPeers is the number of connections above which the connection
	// manager trims unprotected ones; 0 means DefaultMaxPeers.
	MaxPeers int
	// Logger; nil discards.
	Logger *slog.Logger
}

// Host is a node's libp2p host: its QUIC endpoint, the /quicproquo/p2p/1
// protocol in both directions, the links it keeps to peers, and its relay
// reservations or relay service. Its methods are safe for concurrent use.
type Host struct {
	cfg    Config
	h      host.Host
	self   ed25519.PublicKey
	log    *slog.Logger
	rpcLog *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the Host starts

	relay *relayv2.Relay // nil unless RelayService.Enable
	links *linkManager
	addrs *addrBook

	mu      sync.Mutex // guards the fields below
	clients map[peer.ID]*client
	conns   map[*twoparty.Conn]struct{} // live RPC connections, both directions
	closed  bool
}

// client is the cached RPC connection to one peer.
type client struct {
	id    peer.ID
	ready chan struct{} // closed when conn/ns or err is set
	link  network.Conn  // the libp2p connection its stream is on
	conn  *twoparty.Conn
	ns    schema.NodeService
	err   error
}

// New starts a host. Close stops it.
func New(cfg Config) (*Host, error) {
	key, err := libp2pKey(cfg.Identity)
	if err != nil {
		return nil, err
	}
	if len(cfg.ListenAddrs) == 0 {
		return nil, errors.New("p2p: Config.ListenAddrs is empty")
	}
	if cfg.MaxPeers <= 0 {
		cfg.MaxPeers = DefaultMaxPeers
	}
	cfg.Link = cfg.Link.withDefaults()
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}

	// libp2p's default limits, scaled to this machine's memory, plus the
	// service limits of relay, identify and ping.
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.AutoScale()))
	if err != nil {
		return nil, fmt.Errorf("p2p: resource manager: %w", err)
	}
	cm, err := connmgr.NewConnManager(cfg.MaxPeers*3/4, cfg.MaxPeers, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("p2p: connection manager: %w", err)
	}
	h, err := libp2p.New(
		libp2p.Identity(key),
		libp2p.ListenAddrs(cfg.ListenAddrs...),
		// QUIC only; the security and muxer defaults remain for relayed
		// connections, which are upgraded like a raw stream.
		libp2p.Transport(libp2pquic.NewTransport),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.EnableRelay(),
		libp2p.EnableHolePunching(),
		// No NATPortMap (UPnP/NAT-PMP), no built-in mDNS, no bootstrap
		// peers, no global Prometheus registry.
		libp2p.DisableMetrics(),
		// A messenger over QUIC only cannot fall back to TCP, so UDP is
		// never written off as black-holed after failed dials.
		libp2p.UDPBlackHoleSuccessCounter(nil),
		libp2p.IPv6BlackHoleSuccessCounter(nil),
		libp2p.UserAgent(userAgent),
	)
	if err != nil {
		cm.Close()
		rm.Close()
		return nil, fmt.Errorf("p2p: starting libp2p: %w", err)
	}
	self, err := IdentityKey(h.ID())
	if err != nil {
		h.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	hst := &Host{
		cfg:     cfg,
		h:       h,
		self:    self,
		log:     log.With("component", "p2p", "self", h.ID().ShortString()),
		rpcLog:  log.With("component", "p2p-rpc"),
		ctx:     ctx,
		cancel:  cancel,
		clients: make(map[peer.ID]*client),
		conns:   make(map[*twoparty.Conn]struct{}),
	}
	if cfg.RelayService.Enable {
		if hst.relay, err = newRelayService(h, cfg.RelayService); err != nil {
			cancel()
			h.Close()
			return nil, err
		}
	}
	if cfg.Service != nil {
		h.SetStreamHandler(ProtocolID, hst.handleStream)
	}
	hst.addrs = newAddrBook(hst)
	hst.links = newLinkManager(hst)
	if err := hst.addrs.start(); err != nil {
		hst.Close()
		return nil, err
	}
	for _, r := range cfg.Relays {
		hst.AddRelay(r)
	}
	return hst, nil
}

// ID returns the host's peer ID.
func (h *Host) ID() peer.ID { return h.h.ID() }

// Identity returns the host's Ed25519 identity key.
func (h *Host) Identity() ed25519.PublicKey { return h.self }

// Libp2p returns the underlying libp2p host, for what this package does
// not wrap. Do not close it; close the Host.
func (h *Host) Libp2p() host.Host { return h.h }

// Close stops the host: its links, RPC connections, relay reservations and
// service, and the libp2p host. It waits for every goroutine it started.
// Close is idempotent.
func (h *Host) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	conns := make([]*twoparty.Conn, 0, len(h.conns))
	for c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.Unlock()

	h.cancel()
	h.h.RemoveStreamHandler(ProtocolID)
	for _, c := range conns {
		c.Close()
	}
	h.wg.Wait()
	if h.relay != nil {
		h.relay.Close()
	}
	return h.h.Close()
}

// goroutine runs f on a goroutine that Close waits for. It reports false,
// without running f, once Close has begun.
func (h *Host) goroutine(f func()) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		f()
	}()
	return true
}

// handleStream serves NodeService on an inbound /quicproquo/p2p/1 stream,
// to the peer the connection authenticated.
func (h *Host) handleStream(s network.Stream) {
	caller, err := IdentityKey(s.Conn().RemotePeer())
	if err != nil {
		h.log.Debug("refusing RPC stream", "peer", s.Conn().RemotePeer(), "err", err)
		s.Reset()
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		s.Reset()
		return
	}
	conn := newConn(s, twoparty.Options{Bootstrap: h.cfg.Service(caller), Logger: h.rpcLog})
	h.trackLocked(conn, nil)
}

// trackLocked records conn until it ends, then forgets it (and the cached
// client c, if any). h.mu must be held and h not closed.
func (h *Host) trackLocked(conn *twoparty.Conn, c *client) {
	h.conns[conn] = struct{}{}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		<-conn.Done()
		h.mu.Lock()
		delete(h.conns, conn)
		if c != nil && h.clients[c.id] == c {
			delete(h.clients, c.id)
		}
		h.mu.Unlock()
		if c != nil {
			c.ns.Release()
		}
	}()
}

// NodeService returns peer's NodeService over the link, opening the link
// and an RPC connection if needed; the connection is reused by later
// calls until it breaks. The caller must Release the returned client,
// and, with capnp-go, read each call's results before releasing the call.
func (h *Host) NodeService(ctx context.Context, id peer.ID) (schema.NodeService, error) {
	for attempt := 0; attempt < 3; attempt++ {
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			return schema.NodeService{}, ErrClosed
		}
		c, ok := h.clients[id]
		if !ok {
			c = &client{id: id, ready: make(chan struct{})}
			h.clients[id] = c
			h.mu.Unlock()
			h.openClient(ctx, id, c)
		} else {
			h.mu.Unlock()
		}
		select {
		case <-c.ready:
		case <-ctx.Done():
			return schema.NodeService{}, ctx.Err()
		}
		if c.err != nil {
			return schema.NodeService{}, c.err
		}
		if h.stale(c, attempt == 0) {
			// Its connection is gone, or a relayed one a direct one
			// replaces: open a fresh one; the old one serves the calls
			// in flight on it until it ends.
			h.mu.Lock()
			if h.clients[id] == c {
				delete(h.clients, id)
			}
			h.mu.Unlock()
			continue
		}
		return c.ns.AddRef(), nil
	}
	return schema.NodeService{}, fmt.Errorf("p2p: RPC to %s: its connections keep closing", id.ShortString())
}

// stale reports whether the cached client c should not take new calls:
// it is broken, or (if upgrade) relayed while a direct connection is up.
func (h *Host) stale(c *client, upgrade bool) bool {
	select {
	case <-c.conn.Done():
		return true
	default:
	}
	if c.link.IsClosed() {
		return true
	}
	if upgrade && isRelayed(c.link) {
		st, _ := h.links.current(c.id)
		return st == LinkDirect
	}
	return false
}

// openClient opens the RPC connection of c and marks it ready.
func (h *Host) openClient(ctx context.Context, id peer.ID, c *client) {
	defer close(c.ready)
	fail := func(err error) {
		c.err = fmt.Errorf("p2p: RPC to %s: %w", id.ShortString(), err)
		h.mu.Lock()
		if h.clients[id] == c {
			delete(h.clients, id)
		}
		h.mu.Unlock()
	}
	// A relayed link is a link: limited connections are fine for RPC.
	s, err := h.h.NewStream(network.WithAllowLimitedConn(ctx, "quicproquo RPC"), id, ProtocolID)
	if err != nil {
		fail(err)
		return
	}
	conn := newConn(s, twoparty.Options{Logger: h.rpcLog})
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		conn.Close()
		fail(ErrClosed)
		return
	}
	c.link = s.Conn()
	c.conn = conn
	c.ns = schema.NodeService(conn.Bootstrap())
	h.trackLocked(conn, c)
	h.mu.Unlock()
}

// newConn runs RPC on a libp2p stream as on every quicproquo link
// (package twoparty), reading messages of at most MaxRPCMessage.
func newConn(s network.Stream, opts twoparty.Options) *twoparty.Conn {
	opts.MaxMessageSize = MaxRPCMessage
	return twoparty.NewConn(resetOnClose{s}, opts)
}

// resetOnClose closes a libp2p stream, resetting it when a clean close
// fails, so that its resources are freed either way.
type resetOnClose struct{ network.Stream }

func (s resetOnClose) Close() error {
	if err := s.Stream.Close(); err != nil {
		return s.Stream.Reset()
	}
	return nil
}
