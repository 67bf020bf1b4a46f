package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	bolt "go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/internal/boltcheck"
	"github.com/quicproquo/qpq/mls"
	"github.com/quicproquo/qpq/node/conv"
	"github.com/quicproquo/qpq/node/history"
	"github.com/quicproquo/qpq/node/home"
	"github.com/quicproquo/qpq/node/identity"
	"github.com/quicproquo/qpq/node/keys"
	"github.com/quicproquo/qpq/node/names"
	"github.com/quicproquo/qpq/node/outbox"
	"github.com/quicproquo/qpq/p2p"
	"github.com/quicproquo/qpq/p2p/mdns"
	"github.com/quicproquo/qpq/p2p/peersvc"
	"github.com/quicproquo/qpq/rpc"
	"github.com/quicproquo/qpq/rpc/errcode"
	"github.com/quicproquo/qpq/seal"
)

// DBFile is the node's bbolt file in its data directory.
const DBFile = "node.db"

// Defaults for the zero Config.
const (
	// DefaultDirectTimeout bounds one delivery attempt over the P2P link
	// before the home server is tried: a LAN answers in well under a
	// millisecond, and a dead path must not hold a message for the link's
	// failure detection time (seconds).
	DefaultDirectTimeout = 500 * time.Millisecond
	// DefaultDirectCoolOff is how long a peer whose direct delivery failed
	// is reached through the home server only, unless its link comes up
	// again before.
	DefaultDirectCoolOff = 5 * time.Second
)

// Config configures a Node. DataDir is required; the zero value of every
// other field means its documented default.
type Config struct {
	// DataDir holds the identity (identity.key, hybrid.key) and node.db.
	DataDir string
	// Username is the user's name on the LAN and at the home server. It
	// is stored on first run; a later run may omit it, but not change it.
	Username string
	// Server is the home server's host:port; empty means LAN only.
	Server string
	// Password returns the home server account's password (asked once).
	// Required with Server.
	Password func(ctx context.Context) ([]byte, error)
	// ListenAddrs are the P2P (libp2p QUIC) listen addresses. Default:
	// QUIC on port 0 of the IPv4 addresses of the mDNS interfaces (or of
	// loopback when there is none).
	ListenAddrs []ma.Multiaddr
	// NoMDNS turns LAN discovery off.
	NoMDNS bool
	// MDNSInterfaces names the interfaces for mDNS (and the default
	// listen addresses); empty means every up, multicast-capable,
	// non-loopback interface with an IPv4 address.
	MDNSInterfaces []string
	// Peers are peers to keep linked besides those mDNS finds.
	Peers []peer.AddrInfo
	// Relays are libp2p circuit relays (home servers) to hold a
	// reservation at, besides the home server's own (learned at login).
	Relays []peer.AddrInfo
	// ServerOnly keeps this device's IP address from contacts beyond the
	// LAN: the node publishes no endpoint record, takes no relay from the
	// home server and links to no contact's published endpoint, so
	// messages to peers outside the LAN always go through the home
	// server. mDNS is not affected (NoMDNS turns it off).
	ServerOnly bool
	// KeyPackages is the stock kept at each place (keys.DefaultStock).
	KeyPackages int
	// DirectTimeout and DirectCoolOff: see the defaults.
	DirectTimeout, DirectCoolOff time.Duration
	// CommitDelay: see conv.DefaultCommitDelay.
	CommitDelay time.Duration
	// Link tunes the P2P links (heartbeat, redial).
	Link p2p.LinkConfig
	// Outbox tunes delivery retries.
	Outbox outbox.Config
	// OnEvent receives every event, in order, on one goroutine. It may
	// block briefly; the node never waits for it.
	OnEvent func(Event)
	// Logger; nil discards. It never receives message text or keys.
	Logger *slog.Logger
}

// Node is the messenger: one per device.
type Node struct {
	cfg    Config
	id     *identity.Identity
	self   ed25519.PublicKey
	user   string
	db     *bolt.DB
	log    *slog.Logger
	events *eventQueue

	names   *names.Book
	keys    *keys.Stock
	history *history.History
	outbox  *outbox.Outbox
	pstore  *peersvc.Store
	psvc    *peersvc.Service
	convs   *conv.Manager
	host    *p2p.Host
	disc    *mdns.Discovery // nil with NoMDNS
	home    *home.Session   // nil without a server

	ctx    context.Context // ends when Close begins
	cancel context.CancelFunc
	wg     sync.WaitGroup // background work started outside Run
	runWG  sync.WaitGroup // Run, while it runs

	reachKick chan struct{} // asks reachContacts for a pass

	readyOnce sync.Once
	closeOnce sync.Once
	stockMu   sync.Mutex // serializes KeyPackage refills

	mu        sync.Mutex // guards the fields below
	links     map[string]p2p.LinkState
	coolOff   map[string]time.Time
	convCache map[string]conv.Conversation
	resolving map[string]bool
	unnamed   []ed25519.PublicKey       // members met in conversations, for nameNewMembers
	static    map[peer.ID]bool          // peers given by Config.Peers or AddPeer, or resolved (reach.go)
	relays    map[peer.ID]bool          // Config.Relays and the home server's (learnRelay)
	records   map[string][]ma.Multiaddr // identity → addresses of its last endpoint record
	conflicts map[string]bool           // name + identity claims already reported
	held      map[string]bool           // recipients reported as waiting (Delivery), until they are reached
	// hybridKeys caches parsed keys of node.hybrid (which never change).
	hybridKeys map[string]*seal.PublicKey
	running    bool

	startupErrs []Event // reported when Run starts
}

// Open loads or creates the node's identity and state in cfg.DataDir and
// starts its P2P host (and mDNS). Run makes it work; Close stops it.
func Open(ctx context.Context, cfg Config) (n *Node, err error) {
	if cfg.DataDir == "" {
		return nil, errors.New("node: Config.DataDir is required")
	}
	if cfg.Server != "" && cfg.Password == nil {
		return nil, errors.New("node: Config.Password is required with a Server")
	}
	if cfg.KeyPackages <= 0 {
		cfg.KeyPackages = keys.DefaultStock
	}
	if cfg.DirectTimeout <= 0 {
		cfg.DirectTimeout = DefaultDirectTimeout
	}
	if cfg.DirectCoolOff <= 0 {
		cfg.DirectCoolOff = DefaultDirectCoolOff
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.OnEvent == nil {
		cfg.OnEvent = func(Event) {}
	}
	id, _, err := identity.LoadOrCreate(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	dbPath := filepath.Join(cfg.DataDir, DBFile)
	// bbolt trusts its pages: a damaged file would panic in Open or in
	// whichever call first reads the bad page.
	switch err := boltcheck.File(dbPath); {
	case errors.Is(err, boltcheck.ErrDamaged):
		return nil, fmt.Errorf("node: %s: %w (moving it away starts this node with no conversations; %s, your identity, is kept apart)", dbPath, err, identity.IdentityFile)
	case errors.Is(err, boltcheck.ErrLocked):
		return nil, fmt.Errorf("node: %s is in use (is another qpq chat using %s?)", DBFile, cfg.DataDir)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("node: %w", err)
	}
	n = &Node{
		cfg:       cfg,
		id:        id,
		self:      id.PublicKey(),
		log:       log.With("component", "node"),
		links:     make(map[string]p2p.LinkState),
		coolOff:   make(map[string]time.Time),
		convCache: make(map[string]conv.Conversation),
		resolving: make(map[string]bool),
		static:    make(map[peer.ID]bool),
		records:   make(map[string][]ma.Multiaddr),
		relays:    make(map[peer.ID]bool),
		reachKick: make(chan struct{}, 1),
		conflicts: make(map[string]bool),
		held:      make(map[string]bool),

		hybridKeys: make(map[string]*seal.PublicKey),
	}
	for _, r := range cfg.Relays {
		n.relays[r.ID] = true
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.db, err = bolt.Open(dbPath, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		n.cancel()
		return nil, fmt.Errorf("node: opening %s (is another qpq chat using %s?): %w", DBFile, cfg.DataDir, err)
	}
	n.events = newEventQueue(cfg.OnEvent)
	// The named result is nil once an error is returned: close the node
	// this Open made.
	opened := n
	defer func() {
		if err != nil {
			opened.Close()
		}
	}()
	if n.user, err = n.username(cfg.Username); err != nil {
		return nil, err
	}
	if err := n.openStores(); err != nil {
		return nil, err
	}
	if err := n.startP2P(); err != nil {
		return nil, err
	}
	if cfg.Server != "" {
		if n.home, err = home.New(home.Config{
			Addr: cfg.Server, Username: n.user, Identity: n.self, DB: n.db,
			Password: cfg.Password, OnPin: n.onPin, OnLogin: n.onLogin, OnDown: n.onServerDown,
			Handle:        func(_ context.Context, data []byte) error { return n.handleSealed(outbox.ViaServer, data) },
			OnHandleError: n.onInboxError,
			Logger:        log,
		}); err != nil {
			return nil, err
		}
	}
	for _, c := range n.convs.List() {
		n.convCache[string(c.ID)] = c
	}
	return n, nil
}

var (
	bucketMeta   = []byte("node.meta")
	bucketHybrid = []byte("node.hybrid")
	keyUser      = []byte("user")
)

// username returns the data directory's user name, recording want on first
// run.
func (n *Node) username(want string) (string, error) {
	var user string
	err := n.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketHybrid); err != nil {
			return err
		}
		stored := string(b.Get(keyUser))
		switch {
		case stored != "" && want != "" && want != stored:
			return fmt.Errorf("node: %s belongs to user %q, not %q; use another --data directory for %q",
				n.cfg.DataDir, stored, want, want)
		case stored != "":
			user = stored
			return nil
		case want == "":
			return errors.New("node: no user name yet: pass --user NAME on the first run")
		}
		if err := names.Check(want); err != nil {
			return fmt.Errorf("node: user name %q: %w", want, err)
		}
		user = want
		return b.Put(keyUser, []byte(want))
	})
	return user, err
}

func (n *Node) openStores() error {
	var err error
	if n.names, err = names.New(n.db); err != nil {
		return err
	}
	if err := n.names.Bind(n.user, n.self); err != nil {
		return err
	}
	if n.keys, err = keys.New(n.db, n.id.PrivateKey(), []mls.ExtensionType{conv.ExtensionType}); err != nil {
		return err
	}
	if n.history, err = history.New(n.db); err != nil {
		return err
	}
	ocfg := n.cfg.Outbox
	ocfg.OnResult = n.onResult
	ocfg.OnWaiting = n.onWaiting
	ocfg.Logger = n.cfg.Logger
	if n.outbox, err = outbox.New(n.db, outbox.DeliverFunc(n.deliver), ocfg); err != nil {
		return err
	}
	if n.pstore, err = peersvc.NewStore(n.db); err != nil {
		return err
	}
	if err := n.pstore.SetHybridKey(n.id.Hybrid().Public().Bytes()); err != nil {
		return err
	}
	if n.psvc, err = peersvc.New(n.pstore, peersvc.Config{Identity: n.self, Username: n.user, Logger: n.cfg.Logger}); err != nil {
		return err
	}
	n.convs, err = conv.New(conv.Config{
		DB: n.db, Keys: n.keys, Outbox: n.outbox, History: n.history,
		CommitDelay: n.cfg.CommitDelay, OnEvent: n.onConvEvent, Logger: n.cfg.Logger,
	})
	if err != nil {
		return err
	}
	return n.topUpPeers()
}

// startP2P starts the libp2p host and mDNS.
func (n *Node) startP2P() error {
	addrs := n.cfg.ListenAddrs
	if len(addrs) == 0 {
		var err error
		if addrs, err = defaultListenAddrs(n.cfg.MDNSInterfaces); err != nil {
			return err
		}
	}
	var err error
	n.host, err = p2p.New(p2p.Config{
		Identity:    n.id.PrivateKey(),
		ListenAddrs: addrs[:1],
		Service:     n.psvc.Client,
		Relays:      n.cfg.Relays,
		Link:        n.cfg.Link,
		OnLink:      n.onLink,
		Logger:      n.cfg.Logger,
	})
	if err != nil {
		return err
	}
	port, err := quicPort(n.host.AddrInfo())
	if err != nil {
		return err
	}
	// The other interfaces listen on the same port: mDNS announces one.
	for _, a := range addrs[1:] {
		if a, err := withPort(a, port); err == nil {
			if err := n.host.Libp2p().Network().Listen(a); err != nil {
				n.log.Warn("not listening", "addr", a, "err", err)
			}
		}
	}
	if n.cfg.NoMDNS {
		return nil
	}
	n.disc, err = mdns.Start(mdns.Config{
		Identity: n.self, Username: n.user, Port: port,
		Interfaces: n.cfg.MDNSInterfaces, OnEvent: n.onMDNS, Logger: n.cfg.Logger,
	})
	switch {
	case err != nil && len(n.cfg.MDNSInterfaces) > 0:
		return fmt.Errorf("node: mDNS: %w", err)
	case err != nil:
		// A machine with no LAN interface still works through a server
		// or configured peers; say so once Run starts.
		n.log.Warn("LAN discovery is off", "err", err)
		n.startupErrs = append(n.startupErrs, Error{Code: string(errcode.FailedPrecondition),
			Message: "LAN discovery (mDNS) is off: " + err.Error()})
	}
	return nil
}

// defaultListenAddrs returns QUIC addresses, port 0, on the IPv4 addresses
// of the interfaces mDNS would use, or loopback when there are none.
func defaultListenAddrs(only []string) ([]ma.Multiaddr, error) {
	ifis, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	var out []ma.Multiaddr
	for _, ifi := range ifis {
		if len(only) > 0 && !contains(only, ifi.Name) {
			continue
		}
		if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagMulticast == 0 || ifi.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLinkLocalUnicast() {
				m, err := ma.NewMultiaddr("/ip4/" + ipn.IP.String() + "/udp/0/quic-v1")
				if err == nil {
					out = append(out, m)
				}
			}
		}
	}
	if len(out) == 0 {
		if len(only) > 0 {
			return nil, fmt.Errorf("node: no IPv4 address on interfaces %v", only)
		}
		out = append(out, ma.StringCast("/ip4/127.0.0.1/udp/0/quic-v1"))
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func quicPort(info peer.AddrInfo) (int, error) {
	for _, a := range info.Addrs {
		if p, err := a.ValueForProtocol(ma.P_UDP); err == nil {
			return strconv.Atoi(p)
		}
	}
	return 0, errors.New("node: the P2P host listens on no UDP port")
}

func withPort(a ma.Multiaddr, port int) (ma.Multiaddr, error) {
	ip, err := a.ValueForProtocol(ma.P_IP4)
	if err != nil {
		return nil, err
	}
	return ma.NewMultiaddr(fmt.Sprintf("/ip4/%s/udp/%d/quic-v1", ip, port))
}

// Run runs the node until ctx ends: delivery, the P2P inbox, commits, and
// the home server session. It returns ctx.Err(). Call it once.
func (n *Node) Run(ctx context.Context) error {
	n.mu.Lock()
	if n.running || n.ctx.Err() != nil {
		n.mu.Unlock()
		return errors.New("node: Run called twice, or after Close")
	}
	n.running = true
	n.runWG.Add(1)
	n.mu.Unlock()
	defer n.runWG.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(n.ctx, cancel) // Close ends Run too
	defer stop()

	var wg sync.WaitGroup
	goRun := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && ctx.Err() == nil {
				n.log.Error(name+" stopped", "err", err)
			}
		}()
	}
	for _, ev := range n.startupErrs {
		n.emit(ev)
	}
	goRun("outbox", n.outbox.Run)
	goRun("conversations", n.convs.Run)
	goRun("P2P inbox", n.readP2PInbox)
	goRun("KeyPackage stock", n.keepStock)
	for _, p := range n.cfg.Peers {
		n.AddPeer(p)
	}
	if n.home != nil {
		goRun("home server session", func(ctx context.Context) error {
			err := n.home.Run(ctx)
			switch {
			case errors.Is(err, home.ErrPinMismatch):
				n.emit(Error{Code: string(errcode.PermissionDenied), Message: "REFUSING THE HOME SERVER: " + messageOf(err)})
			case errors.Is(err, home.ErrLogin):
				n.emit(Error{Code: string(errcode.Unauthenticated), Message: messageOf(err)})
			}
			return err
		})
		if !n.cfg.ServerOnly {
			goRun("endpoint publishing", func(ctx context.Context) error {
				return p2p.Publish(ctx, n.host, directory{n}, p2p.PublishConfig{Logger: n.cfg.Logger})
			})
			goRun("reaching contacts", n.reachContacts)
		}
	} else {
		n.becomeReady()
	}
	<-ctx.Done()
	wg.Wait()
	return ctx.Err()
}

func (n *Node) becomeReady() {
	n.readyOnce.Do(func() {
		n.emit(Ready{User: n.user, Identity: hex.EncodeToString(n.self), PeerID: n.host.ID().String()})
	})
}

// Close stops the node: Run (it waits for it to return), the P2P host
// (after saying goodbye on mDNS), then the store. Close is idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.mu.Lock()
		n.cancel() // under mu: no Run or background task starts after
		n.mu.Unlock()
		n.runWG.Wait()
		if n.disc != nil {
			n.disc.Close()
		}
		if n.host != nil {
			n.host.Close()
		}
		n.wg.Wait()
		if n.events != nil {
			n.events.close()
		}
		n.db.Close()
	})
	return nil
}

// goBackground runs f on a goroutine Close waits for, unless Close began.
func (n *Node) goBackground(f func(ctx context.Context)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ctx.Err() != nil {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f(n.ctx)
	}()
}

func (n *Node) emit(ev Event) { n.events.push(ev) }

// Report hands ev to Config.OnEvent behind the events the node reported
// before, so that a command's answer follows what the command caused
// (the REPL's done after the conversation it created).
func (n *Node) Report(ev Event) { n.emit(ev) }

// ---- the home server side ----

func (n *Node) onPin(fp rpc.Fingerprint, first bool) {
	if first {
		n.emit(Pin{Server: n.cfg.Server, Fingerprint: fp.String(), First: true})
	}
}

// onLogin uploads what the home server keeps for this node, then reports
// ready (the first time) and retries what waited for the server.
func (n *Node) onLogin(ctx context.Context, c *rpc.Client) error {
	if err := c.UploadHybridKey(ctx, n.self, n.id.Hybrid().Public().Bytes()); err != nil {
		return err
	}
	if err := n.topUpServer(ctx, c); err != nil {
		return err
	}
	// The last-resort KeyPackage: served by the server once the stock
	// there is drained, so that new contacts can always start a DM. The
	// server keeps the newest, so uploading it again is harmless.
	last, err := n.pstore.LastResortKeyPackage()
	if err != nil {
		return err
	}
	if _, err := c.UploadKeyPackage(ctx, n.self, last); err != nil {
		return err
	}
	if !n.cfg.ServerOnly {
		n.learnRelay(ctx, c)
		n.kickReach()
	}
	n.emit(Server{Server: n.cfg.Server, State: "up"})
	n.becomeReady()
	n.outbox.KickAll()
	return nil
}

// learnRelay makes the home server's circuit relay (from serverInfo) one
// of this node's relays, so that peers who cannot reach it directly reach
// it through its own server without a --relay flag. The answer comes over
// the pinned TLS connection, so it is as trusted as the server. A server
// without the extension or without a relay leaves the relays as they are;
// that is not a login failure.
func (n *Node) learnRelay(ctx context.Context, c *rpc.Client) {
	_, rec, err := c.ServerInfo(ctx)
	if err != nil {
		n.log.Info("the home server does not say where its relay is", "err", err)
		return
	}
	if len(rec) == 0 {
		return
	}
	info, err := p2p.DecodeEndpoint(rec, nil)
	if err != nil {
		n.log.Warn("the home server's relay address is invalid", "err", err)
		return
	}
	n.mu.Lock()
	n.relays[info.ID] = true
	n.mu.Unlock()
	n.host.AddRelay(info)
}

func (n *Node) onServerDown(err error) {
	n.emit(Server{Server: n.cfg.Server, State: "down"})
}

// onInboxError tells the user that received messages cannot be stored
// here (the disk full, say); they wait (at the home server, or in the P2P
// inbox) and are processed again.
func (n *Node) onInboxError(err error) {
	n.emit(Error{Code: string(errcode.Of(errcode.Storage(err))),
		Message: fmt.Sprintf("incoming messages cannot be stored on this device (%v); they wait and are processed again", err)})
}

func (n *Node) serverClient() *rpc.Client {
	if n.home == nil {
		return nil
	}
	return n.home.Client()
}

// directory publishes and resolves endpoint records at the home server.
type directory struct{ n *Node }

func (d directory) PublishEndpoint(ctx context.Context, record []byte) error {
	c := d.n.serverClient()
	if c == nil {
		return errors.New("not logged in to the home server")
	}
	return c.PublishEndpoint(ctx, d.n.self, record)
}

func (d directory) ResolveEndpoint(ctx context.Context, identity ed25519.PublicKey) ([]byte, error) {
	c := d.n.serverClient()
	if c == nil {
		return nil, errors.New("not logged in to the home server")
	}
	return c.ResolveEndpoint(ctx, identity)
}

var _ p2p.Directory = directory{}

// ---- key packages ----

// topUpPeers refills the KeyPackages this node serves over the P2P link,
// and makes its last-resort one if it has none.
func (n *Node) topUpPeers() error {
	n.stockMu.Lock()
	defer n.stockMu.Unlock()
	if last, err := n.pstore.LastResortKeyPackage(); err != nil {
		return err
	} else if last == nil {
		kps, err := n.keys.Make(keys.PlaceLastResort, 1)
		if err != nil {
			return err
		}
		if err := n.pstore.SetLastResortKeyPackage(kps[0]); err != nil {
			return err
		}
	}
	have, err := n.pstore.KeyPackageCount()
	if err != nil || have >= n.cfg.KeyPackages {
		return err
	}
	kps, err := n.keys.Make(keys.PlacePeers, n.cfg.KeyPackages-have)
	if err != nil {
		return err
	}
	return n.pstore.AddKeyPackages(kps...)
}

// StockCheck is how often the KeyPackages served over the P2P link are
// counted and refilled: peers may take some without ever sending a
// Welcome, which no other event reveals.
const StockCheck = 30 * time.Second

func (n *Node) keepStock(ctx context.Context) error {
	t := time.NewTicker(StockCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			if err := n.topUpPeers(); err != nil {
				n.log.Warn("refilling KeyPackages", "err", err)
			}
		}
	}
}

// topUpServer refills the KeyPackages at the home server. The server does
// not say how many it still holds; the node counts those it uploaded and
// no Welcome has used.
func (n *Node) topUpServer(ctx context.Context, c *rpc.Client) error {
	n.stockMu.Lock()
	defer n.stockMu.Unlock()
	have, err := n.keys.Count(keys.PlaceServer)
	if err != nil || have >= n.cfg.KeyPackages {
		return err
	}
	kps, err := n.keys.Make(keys.PlaceServer, n.cfg.KeyPackages-have)
	if err != nil {
		return err
	}
	for _, kp := range kps {
		if _, err := c.UploadKeyPackage(ctx, n.self, kp); err != nil {
			return err
		}
	}
	return nil
}

// ---- conversation events ----

// onConvEvent is called with the conversation manager's lock held: it
// must not call the manager.
func (n *Node) onConvEvent(ev conv.Event) {
	switch ev := ev.(type) {
	case conv.Changed:
		n.mu.Lock()
		n.convCache[string(ev.Conversation.ID)] = ev.Conversation
		n.mu.Unlock()
		n.emit(n.convEvent(ev.Conversation))
		n.kickReach()
		for _, m := range ev.Conversation.Members {
			if _, known := n.names.Name(m); !known {
				n.noteUnnamed(m)
				n.learnIdentity(m)
			}
		}
	case conv.Received:
		m := ev.Message
		n.emit(Message{
			Conversation: n.convNameByID(m.Conversation), From: n.nameOf(m.Sender[:]),
			ID: m.ID.String(), Text: m.Text, Via: m.Via, Time: m.Time,
		})
	case conv.Problem:
		msg := ev.Text
		if ev.Conversation != nil {
			msg = n.convNameByID(ev.Conversation) + ": " + msg
		}
		n.emit(Error{Code: string(ev.Code), Message: msg})
	case conv.KeyPackageUsed:
		place := ev.Place
		n.goBackground(func(ctx context.Context) {
			var err error
			switch place {
			case keys.PlacePeers:
				err = n.topUpPeers()
			case keys.PlaceServer:
				c := n.serverClient()
				if c == nil {
					return // refilled at the next login
				}
				cctx, cancel := context.WithTimeout(ctx, home.CallTimeout)
				err = n.topUpServer(cctx, c)
				cancel()
			}
			if err != nil {
				n.log.Warn("replacing a used KeyPackage", "err", err)
			}
		})
	}
}

// onWaiting reports a recipient that what this node sends cannot reach
// now, once until it is reached again.
func (n *Node) onWaiting(it outbox.Item, err error) {
	n.mu.Lock()
	told := n.held[string(it.Recipient[:])]
	n.held[string(it.Recipient[:])] = true
	n.mu.Unlock()
	if !told {
		n.emit(n.delivery(it, DeliveryWaiting, "", err))
	}
}

func (n *Node) delivery(it outbox.Item, state, via string, err error) Delivery {
	d := Delivery{To: n.nameOf(it.Recipient[:]), Identity: hex.EncodeToString(it.Recipient[:]),
		Conversation: n.convNameByID(it.Conversation), State: state, Via: via}
	if err != nil {
		d.Code, d.Message = string(codeOf(err)), messageOf(err)
	}
	return d
}

// onResult turns delivery outcomes into Sent (or Error) events, after
// the Delivery that ends a recipient's wait.
func (n *Node) onResult(r outbox.Result) {
	n.mu.Lock()
	held := n.held[string(r.Item.Recipient[:])]
	delete(n.held, string(r.Item.Recipient[:])) // a dropped item ends the wait too: the next one is judged afresh
	n.mu.Unlock()
	if held && r.Err == nil {
		n.emit(n.delivery(r.Item, DeliveryResumed, r.Via, nil))
	}
	if r.Err != nil {
		n.emit(Error{Code: string(codeOf(r.Err)), Message: fmt.Sprintf("a message to %s was dropped: %s",
			n.nameOf(r.Item.Recipient[:]), messageOf(r.Err))})
		return
	}
	if r.Item.MessageID.IsZero() {
		return // a Commit, proposal or Welcome
	}
	n.emit(Sent{Conversation: n.convNameByID(r.Item.Conversation), ID: r.Item.MessageID.String(),
		Via: r.Via, To: n.nameOf(r.Item.Recipient[:])})
}

// nameOf returns the user name of an identity, or a short form of the key.
func (n *Node) nameOf(identity []byte) string {
	if name, ok := n.names.Name(identity); ok {
		return name
	}
	return shortID(identity)
}

func shortID(identity []byte) string {
	return "id:" + hex.EncodeToString(identity[:min(4, len(identity))])
}

// fingerprintBytes is how much of an identity key its fingerprint shows:
// 128 bits, so that making a key whose fingerprint matches a given one
// (to pass a man in the middle off as a contact that people verify by
// reading fingerprints to each other) takes 2^128 key generations; at 64
// bits it would be within reach of a large computing budget.
const fingerprintBytes = 16

// fingerprint is the identity key as people compare it: the key's first
// 128 bits in 8 groups of 4 hex digits.
func fingerprint(identity []byte) string {
	h := hex.EncodeToString(identity[:fingerprintBytes])
	groups := make([]string, 0, len(h)/4)
	for i := 0; i < len(h); i += 4 {
		groups = append(groups, h[i:i+4])
	}
	return strings.Join(groups, " ")
}

// Fingerprint returns the form of an identity key given in hex (as in
// events) that people compare: 8 groups of 4 hex digits, or "" if it is
// not an identity key.
func Fingerprint(identityHex string) string {
	id, err := hex.DecodeString(identityHex)
	if err != nil || len(id) != ed25519.PublicKeySize {
		return ""
	}
	return fingerprint(id)
}

func (n *Node) convEvent(c conv.Conversation) Conversation {
	ev := Conversation{
		Name: n.convNameByID(c.ID), Epoch: c.Epoch, Kind: c.Kind.String(), Status: c.Status.String(),
		ID: hex.EncodeToString(c.ID), Members: []string{}, MemberIDs: []string{},
	}
	for _, m := range c.Members {
		ev.Members = append(ev.Members, n.nameOf(m))
		ev.MemberIDs = append(ev.MemberIDs, hex.EncodeToString(m))
	}
	return ev
}

// convNameByID is the name a conversation is shown and addressed by: a
// DM's peer's user name, a group's name; "#" and the start of the group
// id are appended to a name that two conversations share.
func (n *Node) convNameByID(id []byte) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.convNameLocked(id)
}

func (n *Node) convNameLocked(id []byte) string {
	c, ok := n.convCache[string(id)]
	if !ok {
		return "#" + hex.EncodeToString(id[:min(4, len(id))])
	}
	base := n.baseName(c)
	if c.Kind == conv.KindGroup {
		for _, o := range n.convCache {
			if !bytes.Equal(o.ID, c.ID) && n.baseName(o) == base {
				return base + "#" + hex.EncodeToString(c.ID[:2])
			}
		}
	}
	return base
}

func (n *Node) baseName(c conv.Conversation) string {
	if c.Kind == conv.KindDirect {
		return n.nameOf(c.Peer)
	}
	return c.Name
}

func codeOf(err error) errcode.Code {
	switch {
	case errors.Is(err, conv.ErrNotFound), errors.Is(err, errNoSuchUser), errors.Is(err, conv.ErrNotMember):
		return errcode.NotFound
	case errors.Is(err, conv.ErrInvalid):
		return errcode.InvalidArgument
	case errors.Is(err, conv.ErrExists):
		return errcode.AlreadyExists
	case errors.Is(err, conv.ErrNotActive), errors.Is(err, errUnreachable):
		return errcode.FailedPrecondition
	case errors.Is(err, names.ErrConflict):
		return errcode.PermissionDenied
	case errors.Is(err, names.ErrInvalid):
		return errcode.InvalidArgument
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, rpc.ErrDisconnected), errors.Is(err, outbox.ErrNoAnswerYet):
		return errcode.FailedPrecondition
	}
	return errcode.Of(err)
}

// ownPrefixes are the package prefixes that errors of the node's own
// packages start with, as Go errors do; they mean nothing to a person.
var ownPrefixes = []string{"conv: ", "home: ", "names: ", "keys: ", "history: ", "outbox: "}

// messageOf is err's message for a person: without its stable code and
// transport prefixes (errcode.Message), nor a package prefix of ours.
func messageOf(err error) string {
	m := errcode.Message(err)
	for _, p := range ownPrefixes {
		if rest, ok := strings.CutPrefix(m, p); ok {
			return rest
		}
	}
	return m
}

// ErrorEvent returns the Error event that reports err, a command's error:
// its stable code (rpc/errcode) and a message for people.
func ErrorEvent(err error) Error {
	return Error{Code: string(codeOf(err)), Message: messageOf(err)}
}
