package server

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/quicproquo/qpq/node/identity"
	"github.com/quicproquo/qpq/node/server/admin"
	"github.com/quicproquo/qpq/p2p"
	"github.com/quicproquo/qpq/p2p/mdns"
	"github.com/quicproquo/qpq/relay"
	"github.com/quicproquo/qpq/relay/federation"
	"github.com/quicproquo/qpq/relay/store"
	"github.com/quicproquo/qpq/rpc"
)

// Defaults of Config's zero values.
const (
	// DefaultListen is loopback only, so a first run exposes nothing.
	DefaultListen = "127.0.0.1:7443"
	// DefaultP2PPort is the UDP port of the libp2p host when P2P.Listen
	// is empty: it listens on the host of Listen, on this port, so that
	// its AddrInfo stays the same across restarts.
	DefaultP2PPort = 7444
	// DefaultFederationPort is the UDP port of federation when
	// Relay.Federation.Listen is empty: on the host of Listen.
	DefaultFederationPort = 7445
	// DefaultMDNSName is the mDNS instance name when there is no domain.
	DefaultMDNSName = "qpq-server"

	// rpcHeadroom is what a NodeService message may hold beside its
	// largest field (a payload or a key package).
	rpcHeadroom = 1 << 20
)

// Config configures a home server. Relay.DataDir is required; the zero
// value of every other field means its documented default.
type Config struct {
	// Relay is the store-and-forward service; Relay.Domain is this
	// server's domain (default: the host name, lowercased, if it is a
	// valid domain). Relay.Registry, if nil, becomes a registry with the
	// Go runtime and process collectors. Relay.Federation, if set, gets
	// the server's certificate, and listens on the host of Listen at
	// DefaultFederationPort unless its Listen says otherwise.
	Relay relay.Config
	// Listen is the UDP address of NodeService over QUIC (DefaultListen).
	Listen string
	// TLSCertFile and TLSKeyFile name an operator's PEM certificate and
	// key; empty means the self-signed one under DataDir/tls/.
	TLSCertFile, TLSKeyFile string
	// MaxConnections caps client connections (rpc.DefaultMaxConnections).
	MaxConnections int
	// Metrics is the TCP address of the Prometheus endpoint (/metrics);
	// empty means none.
	Metrics string
	P2P     P2PConfig
	MDNS    MDNSConfig
	// Logger; nil discards. Logs never hold tokens, keys or payloads.
	Logger *slog.Logger
}

// P2PConfig configures the libp2p side. Off by default in the package
// (`qpq serve` turns it on).
type P2PConfig struct {
	Enable bool
	// Listen are the QUIC multiaddrs to listen on; empty means
	// /ip4/<host of Listen>/udp/DefaultP2PPort/quic-v1 (ip6 for an IPv6
	// host).
	Listen []ma.Multiaddr
	// Relay bounds the circuit relay v2 service (always on with P2P; the
	// Enable field is ignored). Zero fields mean p2p's defaults.
	Relay p2p.RelayServiceConfig
}

// MDNSConfig configures the LAN announcement. Off by default in the
// package; it needs P2P (the record carries the libp2p port and peer ID).
type MDNSConfig struct {
	Enable bool
	// Interfaces to announce on; empty means every interface that is up,
	// multicast-capable, not loopback and has an IPv4 address.
	Interfaces []string
	// Name is the instance name; empty means the domain, or
	// DefaultMDNSName without one.
	Name string
	// Advertise is the server= value, the host:port LAN clients dial for
	// NodeService; empty means the listen address, or, when that is an
	// unspecified address (0.0.0.0, ::), the first IPv4 address of the
	// announced interfaces with the listen port.
	Advertise string
}

// Info is what a running server tells its operator and its users.
type Info struct {
	Addr        net.Addr        // NodeService over QUIC
	Fingerprint rpc.Fingerprint // of the certificate clients pin
	DataDir     string
	Domain      string
	Identity    ed25519.PublicKey // the server's node identity (libp2p peer ID)
	// P2P is the libp2p host's peer ID and addresses, for nodes that use
	// the server as their relay (p2p.Config.Relays); nil without P2P.
	P2P *peer.AddrInfo
	// MDNS is the server= value announced; empty without mDNS.
	MDNS string
	// Metrics is the metrics URL; empty without metrics.
	Metrics string
	// Admin is the admin socket's path (online backups, `qpq backup`);
	// empty when it could not be bound.
	Admin string
	// Federation is where peers call this server; nil without
	// federation.
	Federation net.Addr
}

// Server is a running home server.
type Server struct {
	cfg   Config
	log   *slog.Logger
	relay *relay.Relay
	ln    *rpc.Listener
	host  *p2p.Host
	disc  *mdns.Discovery
	mln   net.Listener // metrics
	aln   net.Listener // admin socket
	info  Info

	runOnce   sync.Once
	closeOnce sync.Once
	closeErr  error
}

// Start opens the server's state and binds every listener; Run serves.
// On error nothing it started is left running.
func Start(cfg Config) (_ *Server, err error) {
	if cfg.Relay.DataDir == "" {
		return nil, errors.New("server: no data directory configured")
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Relay.Domain == "" {
		cfg.Relay.Domain = hostDomain()
	}
	if cfg.MDNS.Enable && !cfg.P2P.Enable {
		return nil, errors.New("server: mDNS announces the libp2p address; turn P2P on too, or mDNS off")
	}
	if cfg.Relay.Logger == nil {
		cfg.Relay.Logger = cfg.Logger.With("component", "relay")
	}
	s := &Server{cfg: cfg, log: cfg.Logger}
	// serverInfo hands clients the relay's address; Start sets s.host
	// before Run serves any call.
	cfg.Relay.P2PAddr = s.p2pAddr
	if cfg.Relay.Registry == nil {
		cfg.Relay.Registry = prometheus.NewRegistry()
		cfg.Relay.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	s.cfg = cfg
	defer func() {
		if err != nil {
			s.Close()
		}
	}()

	var cert tls.Certificate
	if cfg.TLSCertFile != "" || cfg.TLSKeyFile != "" {
		cert, err = rpc.LoadCertificate(cfg.TLSCertFile, cfg.TLSKeyFile)
	} else {
		cert, err = rpc.LoadOrCreateCertificate(cfg.Relay.DataDir)
	}
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if fc := cfg.Relay.Federation; fc != nil {
		// Federation presents the certificate clients pin, so operators
		// exchange one fingerprint.
		fed := *fc
		fed.Certificate = cert
		if fed.Listen == "" {
			if fed.Listen, err = withPort(cfg.Listen, DefaultFederationPort); err != nil {
				return nil, err
			}
		}
		cfg.Relay.Federation = &fed
	}
	if s.relay, err = relay.Open(cfg.Relay); err != nil {
		if errors.Is(err, store.ErrInUse) {
			return nil, fmt.Errorf("server: %w (is another qpq serve using %s?)", err, cfg.Relay.DataDir)
		}
		return nil, fmt.Errorf("server: %w", err)
	}
	s.ln, err = rpc.Listen(cfg.Listen, cert, rpc.ListenOptions{
		MaxConnections: cfg.MaxConnections,
		Serve:          rpc.ServeOptions{MaxMessageSize: MaxMessageSize(cfg.Relay.Limits), Logger: s.log.With("component", "rpc")},
		Logger:         s.log.With("component", "rpc"),
	})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s.info = Info{
		Addr:        s.ln.Addr(),
		Fingerprint: rpc.CertificateFingerprint(cert),
		DataDir:     cfg.Relay.DataDir,
		Domain:      cfg.Relay.Domain,
	}
	if f := s.relay.Federation(); f != nil {
		s.info.Federation = f.Addr()
	}
	// Without the admin socket the server still serves; only online
	// backups are off, which the log says.
	if s.aln, err = admin.Listen(cfg.Relay.DataDir); err != nil {
		s.log.Warn("no admin socket: online backups (qpq backup) are off", "err", err)
		err = nil
	} else {
		s.info.Admin = admin.SocketPath(cfg.Relay.DataDir)
	}
	if cfg.Metrics != "" {
		if s.mln, err = net.Listen("tcp", cfg.Metrics); err != nil {
			return nil, fmt.Errorf("server: metrics: %w", err)
		}
		s.info.Metrics = "http://" + s.mln.Addr().String() + "/metrics"
	}

	id, _, err := identity.LoadOrCreate(cfg.Relay.DataDir)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s.info.Identity = id.PublicKey()
	if cfg.P2P.Enable {
		if err := s.startP2P(id.PrivateKey()); err != nil {
			return nil, err
		}
	}
	if cfg.MDNS.Enable {
		if err := s.startMDNS(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// MaxMessageSize is the largest NodeService message a server with these
// limits accepts: its largest legal call (a payload or key package at its
// limit) plus room for the other fields.
func MaxMessageSize(l relay.Limits) uint64 {
	return uint64(max(l.MaxPayload, l.MaxKeyPackage, relay.DefaultMaxPayload)) + rpcHeadroom
}

func (s *Server) startP2P(key ed25519.PrivateKey) error {
	listen := s.cfg.P2P.Listen
	if len(listen) == 0 {
		a, err := defaultP2PListen(s.cfg.Listen)
		if err != nil {
			return err
		}
		listen = []ma.Multiaddr{a}
	}
	rs := s.cfg.P2P.Relay
	rs.Enable = true
	h, err := p2p.New(p2p.Config{
		Identity:     key,
		ListenAddrs:  listen,
		RelayService: rs,
		Logger:       s.log,
	})
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	s.host = h
	info := h.AddrInfo()
	s.info.P2P = &info
	return nil
}

// p2pAddr is the JSON peer.AddrInfo of the libp2p host (its circuit
// relay), or nil without P2P.
func (s *Server) p2pAddr() []byte {
	if s.host == nil {
		return nil
	}
	rec, err := p2p.EncodeEndpoint(s.host.AddrInfo())
	if err != nil {
		s.log.Error("cannot encode the relay's address for serverInfo", "err", err)
		return nil
	}
	return rec
}

// defaultP2PListen is QUIC on DefaultP2PPort at the host of listen.
func defaultP2PListen(listen string) (ma.Multiaddr, error) {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("server: listen address %q: %w", listen, err)
	}
	ip := net.IPv4zero
	if host != "" {
		a, err := net.ResolveIPAddr("ip", host)
		if err != nil {
			return nil, fmt.Errorf("server: listen address %q: %w", listen, err)
		}
		ip = a.IP
	}
	proto := "ip4"
	if ip.To4() == nil {
		proto = "ip6"
	}
	a, err := ma.NewMultiaddr(fmt.Sprintf("/%s/%s/udp/%d/quic-v1", proto, ip, DefaultP2PPort))
	if err != nil {
		return nil, fmt.Errorf("server: P2P listen address: %w", err)
	}
	return a, nil
}

func (s *Server) startMDNS() error {
	port, err := quicPort(s.host)
	if err != nil {
		return err
	}
	adv := s.cfg.MDNS.Advertise
	if adv == "" {
		if adv, err = advertised(s.ln.Addr(), s.cfg.MDNS.Interfaces); err != nil {
			return err
		}
	}
	name := s.cfg.MDNS.Name
	if name == "" {
		name = s.cfg.Relay.Domain
	}
	if name == "" {
		name = DefaultMDNSName
	}
	d, err := mdns.Start(mdns.Config{
		Identity:   s.info.Identity,
		Username:   name,
		Port:       port,
		Server:     adv,
		Domain:     s.cfg.Relay.Domain,
		Interfaces: s.cfg.MDNS.Interfaces,
		Logger:     s.log,
	})
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	s.disc = d
	s.info.MDNS = adv
	return nil
}

// quicPort returns the UDP port the host's QUIC listener is bound to.
func quicPort(h *p2p.Host) (int, error) {
	for _, a := range h.Libp2p().Network().ListenAddresses() {
		if _, err := a.ValueForProtocol(ma.P_QUIC_V1); err != nil {
			continue
		}
		if p, err := a.ValueForProtocol(ma.P_UDP); err == nil {
			if n, err := strconv.Atoi(p); err == nil && n > 0 {
				return n, nil
			}
		}
	}
	return 0, errors.New("server: the libp2p host has no QUIC listen address to announce")
}

// advertised is the server= value for a listener bound to addr: addr
// itself, or for an unspecified address the first IPv4 address of the
// announced interfaces.
func advertised(addr net.Addr, ifaces []string) (string, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return "", fmt.Errorf("server: listen address %v is not UDP", addr)
	}
	port := strconv.Itoa(ua.Port)
	if !ua.IP.IsUnspecified() {
		return net.JoinHostPort(ua.IP.String(), port), nil
	}
	all, err := net.Interfaces()
	if err != nil {
		return "", fmt.Errorf("server: listing interfaces: %w", err)
	}
	for _, ifi := range all {
		if len(ifaces) > 0 && !contains(ifaces, ifi.Name) {
			continue
		}
		if len(ifaces) == 0 && (ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagMulticast == 0 || ifi.Flags&net.FlagLoopback != 0) {
			continue
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
				return net.JoinHostPort(n.IP.String(), port), nil
			}
		}
	}
	return "", errors.New("server: listening on an unspecified address, and no announced interface has an IPv4 address; set the mDNS advertise address (host:port clients dial)")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// withPort is host:port with the host of addr.
func withPort(addr string, port int) (string, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("server: listen address %q: %w", addr, err)
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), nil
}

// hostDomain is the host name as a domain, or "" when it is not one.
func hostDomain() string {
	h, err := os.Hostname()
	if err != nil {
		return ""
	}
	h = strings.ToLower(h)
	if federation.CheckDomain(h) != nil {
		return ""
	}
	return h
}

// Info describes the running server.
func (s *Server) Info() Info { return s.info }

// Relay returns the server's relay, for tests and tools in the same
// process.
func (s *Server) Relay() *relay.Relay { return s.relay }

// P2P returns the libp2p host, or nil without P2P.
func (s *Server) P2P() *p2p.Host { return s.host }

// Run serves until ctx ends, then closes the server. It returns nil when
// ctx ended, or the error that stopped serving. Call it once.
func (s *Server) Run(ctx context.Context) error {
	err := errors.New("server: Run called twice")
	s.runOnce.Do(func() { err = s.run(ctx) })
	return err
}

func (s *Server) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var waits []func() error
	if s.mln != nil {
		waits = append(waits, serveHTTP(ctx, s.mln, promhttp.HandlerFor(s.relay.Registry(), promhttp.HandlerOpts{}), "metrics"))
		s.mln = nil // served now; closed when ctx ends
	}
	if s.aln != nil {
		waits = append(waits, serveHTTP(ctx, s.aln, admin.Handler(s.relay.Store(), s.log.With("component", "admin")), "admin"))
		s.aln = nil
	}
	s.log.Info("serving", "listen", s.info.Addr.String(), "domain", s.info.Domain, "p2p", s.host != nil, "mdns", s.disc != nil)
	err := s.relay.Serve(ctx, s.ln)
	cancel() // ends the HTTP servers too when Serve failed on its own
	for _, wait := range waits {
		if werr := wait(); err == nil {
			err = werr
		}
	}
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	return err
}

// serveHTTP serves h on ln until ctx ends, then shuts the server down:
// requests in progress get 5 s, then their connections are closed (a
// backup still streaming must not hold the store open). The function it
// returns, called once ctx has ended, waits for all of that and reports
// an error that stopped serving, named after what.
func serveHTTP(ctx context.Context, ln net.Listener, h http.Handler, what string) func() error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() {
		err := srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		done <- err
	}()
	// Serve returns as soon as Shutdown starts; the requests it lets
	// finish are over only when Shutdown (or Close) returns.
	shutDown := make(chan struct{})
	context.AfterFunc(ctx, func() {
		defer close(shutDown)
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
	})
	return func() error {
		err := <-done
		<-shutDown
		if err != nil {
			return fmt.Errorf("server: %s: %w", what, err)
		}
		return nil
	}
}

// Close stops everything the server started: the mDNS announcement (with
// a goodbye), the libp2p host, the listeners and the relay. Run calls it;
// call it yourself only for a Server that Run was not given. It is
// idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.disc != nil {
			errs = append(errs, s.disc.Close())
		}
		if s.host != nil {
			errs = append(errs, s.host.Close())
		}
		if s.mln != nil {
			s.mln.Close()
		}
		if s.aln != nil {
			s.aln.Close()
		}
		if s.ln != nil {
			// After Serve this is a no-op; before it, it frees the socket.
			s.ln.Close()
		}
		if s.relay != nil {
			errs = append(errs, s.relay.Close())
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}
