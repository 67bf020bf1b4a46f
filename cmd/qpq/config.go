package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/quicproquo/qpq/node/server"
	"github.com/quicproquo/qpq/p2p"
	"github.com/quicproquo/qpq/relay"
	"github.com/quicproquo/qpq/relay/federation"
	"github.com/quicproquo/qpq/rpc"
)

// DefaultListen is where `qpq serve` listens without --listen: loopback
// only, so a first run exposes nothing. Operators pass --listen for the
// public address.
const DefaultListen = server.DefaultListen

// serveConfig is `qpq serve`'s configuration. Sources, in rising
// precedence: defaults, the TOML file (--config / QPQ_CONFIG), QPQ_*
// environment variables, flags.
type serveConfig struct {
	Listen        string        `toml:"listen"`
	Data          string        `toml:"data"`
	TLSCert       string        `toml:"tls_cert"`
	TLSKey        string        `toml:"tls_key"`
	Metrics       string        `toml:"metrics"`
	RateLimit     bool          `toml:"rate_limit"`
	TokenLifetime time.Duration `toml:"token_lifetime"`
	LogLevel      string        `toml:"log_level"`
	Domain        string        `toml:"domain"`

	MDNS          bool     `toml:"mdns"`
	MDNSIfaces    []string `toml:"mdns_iface"`
	MDNSAdvertise string   `toml:"mdns_advertise"`
	P2P           bool     `toml:"p2p"`
	P2PListen     []string `toml:"p2p_listen"`

	Limits       limitsConfig       `toml:"limits"`
	Rates        ratesConfig        `toml:"rate_limits"`
	RelayService relayServiceConfig `toml:"relay_service"`
	Federation   federationConfig   `toml:"federation"`
}

// federationConfig configures federation; it is on when peers are
// listed. 0 or empty keeps a default.
type federationConfig struct {
	Listen   string        `toml:"listen"`
	MaxHops  int           `toml:"max_hops"`
	Rate     float64       `toml:"rate"`
	Burst    int           `toml:"burst"`
	RetryMax time.Duration `toml:"retry_max"`
	MaxQueue int           `toml:"max_queue"`
	Peers    []peerConfig  `toml:"peers"`
}

// peerConfig is one [[federation.peers]] entry.
type peerConfig struct {
	Domain      string `toml:"domain"`
	Address     string `toml:"address"`
	Fingerprint string `toml:"fingerprint"`
}

// relayServiceConfig mirrors p2p.RelayServiceConfig (the circuit relay v2
// service of the libp2p host); 0 keeps a default.
type relayServiceConfig struct {
	MaxReservations      int           `toml:"max_reservations"`
	MaxReservationsPerIP int           `toml:"max_reservations_per_ip"`
	MaxCircuits          int           `toml:"max_circuits"`
	ReservationTTL       time.Duration `toml:"reservation_ttl"`
	ConnDuration         time.Duration `toml:"conn_duration"`
	ConnData             int64         `toml:"conn_data"`
}

// limitsConfig mirrors relay.Limits; 0 keeps a default.
type limitsConfig struct {
	MaxPayload         int           `toml:"max_payload"`
	MaxKeyPackage      int           `toml:"max_key_package"`
	MaxKeyPackages     int           `toml:"max_key_packages"`
	MaxBatchRecipients int           `toml:"max_batch_recipients"`
	MaxHybridKeys      int           `toml:"max_hybrid_keys"`
	MaxEndpoint        int           `toml:"max_endpoint"`
	MaxFetchBytes      int           `toml:"max_fetch_bytes"`
	MaxInboxDepth      int           `toml:"max_inbox_depth"`
	MaxWaitsPerConn    int           `toml:"max_waits_per_connection"`
	MaxConnections     int           `toml:"max_connections"`
	MaxFetchWait       time.Duration `toml:"max_fetch_wait"`
}

// ratesConfig mirrors relay.RateLimits: requests per second and bursts;
// 0 keeps a default.
type ratesConfig struct {
	PerToken                 float64 `toml:"per_token"`
	PerTokenBurst            int     `toml:"per_token_burst"`
	PerAddress               float64 `toml:"per_address"`
	PerAddressBurst          int     `toml:"per_address_burst"`
	FailedLoginsPerUser      float64 `toml:"failed_logins_per_user"`
	FailedLoginsPerUserBurst int     `toml:"failed_logins_per_user_burst"`
	FailedLoginsPerAddr      float64 `toml:"failed_logins_per_address"`
	FailedLoginsPerAddrBurst int     `toml:"failed_logins_per_address_burst"`
}

func defaultServeConfig() serveConfig {
	return serveConfig{Listen: DefaultListen, RateLimit: true, MDNS: true, P2P: true, LogLevel: "info"}
}

// defaultDataDir is $XDG_DATA_HOME/quicproquo/server, or
// ~/.local/share/quicproquo/server.
func defaultDataDir(getenv func(string) string) (string, error) {
	if x := getenv("XDG_DATA_HOME"); x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "quicproquo", "server"), nil
	}
	home := getenv("HOME")
	if home == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no data directory: pass --data DIR (%v)", err)
		}
		home = h
	}
	return filepath.Join(home, ".local", "share", "quicproquo", "server"), nil
}

// option is one setting reachable by flag and environment variable; the
// variable is QPQ_ + the flag name upper-cased with '-' as '_'.
type option struct {
	name, usage string
	boolean     bool
	set         func(c *serveConfig, v string) error
}

var serveOptions = []option{
	{name: "listen", usage: "UDP address to serve QUIC on (default " + DefaultListen + ")", set: func(c *serveConfig, v string) error { c.Listen = v; return nil }},
	{name: "data", usage: "data directory (default $XDG_DATA_HOME/quicproquo/server)", set: func(c *serveConfig, v string) error { c.Data = v; return nil }},
	{name: "tls-cert", usage: "PEM certificate chain to serve instead of the self-signed one", set: func(c *serveConfig, v string) error { c.TLSCert = v; return nil }},
	{name: "tls-key", usage: "PEM private key of --tls-cert", set: func(c *serveConfig, v string) error { c.TLSKey = v; return nil }},
	{name: "metrics", usage: "serve Prometheus metrics over HTTP on this address (off when empty)", set: func(c *serveConfig, v string) error { c.Metrics = v; return nil }},
	{name: "rate-limit", usage: "rate limits on or off (off for benchmarks and conformance runs)", boolean: true, set: func(c *serveConfig, v string) error { return parseSwitch(v, &c.RateLimit) }},
	{name: "token-lifetime", usage: "session token lifetime (default 24h)", set: func(c *serveConfig, v string) error { return parseDuration(v, &c.TokenLifetime) }},
	{name: "log-level", usage: "debug, info, warn or error", set: func(c *serveConfig, v string) error { c.LogLevel = v; return nil }},
	{name: "domain", usage: "this server's domain: users are name@DOMAIN (default: the host name)", set: func(c *serveConfig, v string) error { c.Domain = v; return nil }},
	{name: "mdns", usage: "announce the server on the LAN by mDNS (needs --p2p)", boolean: true, set: func(c *serveConfig, v string) error { return parseSwitch(v, &c.MDNS) }},
	{name: "mdns-iface", usage: "comma-separated interfaces to announce on (default: every multicast interface with IPv4)", set: func(c *serveConfig, v string) error {
		c.MDNSIfaces = splitList(v)
		return nil
	}},
	{name: "mdns-advertise", usage: "HOST:PORT announced as server= (default: --listen, or an interface address when it is 0.0.0.0)", set: func(c *serveConfig, v string) error { c.MDNSAdvertise = v; return nil }},
	{name: "federation-listen", usage: "UDP address other domains' servers call (default: the --listen host, port 7445; federation is on when [federation] lists peers)", set: func(c *serveConfig, v string) error { c.Federation.Listen = v; return nil }},
	{name: "p2p", usage: "run the libp2p host with the circuit relay service", boolean: true, set: func(c *serveConfig, v string) error { return parseSwitch(v, &c.P2P) }},
	{name: "p2p-listen", usage: "comma-separated QUIC multiaddrs of the libp2p host (default /ip4/<--listen host>/udp/7444/quic-v1)", set: func(c *serveConfig, v string) error {
		c.P2PListen = splitList(v)
		return nil
	}},
}

func envName(flagName string) string {
	return "QPQ_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// loadServeConfig parses args with getenv as the environment.
func loadServeConfig(args []string, getenv func(string) string, stderr io.Writer) (serveConfig, error) {
	fs := flag.NewFlagSet("qpq serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("config", getenv("QPQ_CONFIG"), "TOML configuration file (env QPQ_CONFIG)")
	var flagSets []func(*serveConfig) error // applied last, in command-line order
	for _, o := range serveOptions {
		record := func(v string) error {
			flagSets = append(flagSets, func(c *serveConfig) error { return o.set(c, v) })
			return nil
		}
		usage := o.usage + " (env " + envName(o.name) + ")"
		if o.boolean {
			fs.BoolFunc(o.name, usage, record)
		} else {
			fs.Func(o.name, usage, record)
		}
	}
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: qpq serve [flags]\n\nRuns a home server. Flags win over QPQ_* environment variables, which win\nover the --config file.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return serveConfig{}, err
		}
		return serveConfig{}, errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "qpq serve: unexpected argument %q\n", fs.Arg(0))
		return serveConfig{}, errUsage
	}

	c := defaultServeConfig()
	if *configFile != "" {
		b, err := os.ReadFile(*configFile)
		if err != nil {
			return serveConfig{}, fmt.Errorf("config: %w", err)
		}
		if err := parseConfigFile(b, &c); err != nil {
			return serveConfig{}, fmt.Errorf("config %s: %w", *configFile, err)
		}
	}
	for _, o := range serveOptions {
		if v := getenv(envName(o.name)); v != "" {
			if err := o.set(&c, v); err != nil {
				return serveConfig{}, fmt.Errorf("%s: %w", envName(o.name), err)
			}
		}
	}
	for _, set := range flagSets {
		if err := set(&c); err != nil {
			return serveConfig{}, err
		}
	}
	if c.Data == "" {
		d, err := defaultDataDir(getenv)
		if err != nil {
			return serveConfig{}, err
		}
		c.Data = d
	}
	return c, c.check()
}

// parseConfigFile decodes TOML into c, refusing keys it does not know (a
// typo must not silently keep a default). It does not check the result:
// the environment and flags may still complete it (--domain for the
// file's federation peers), so the caller checks the merged config.
func parseConfigFile(b []byte, c *serveConfig) error {
	md, err := toml.Decode(string(b), c)
	if err != nil {
		return err
	}
	if und := md.Undecoded(); len(und) > 0 {
		return fmt.Errorf("unknown setting %q", und[0].String())
	}
	return nil
}

func (c *serveConfig) check() error {
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("tls_cert and tls_key go together: give both or neither")
	}
	if _, err := logLevel(c.LogLevel); err != nil {
		return err
	}
	if c.TokenLifetime < 0 || c.Limits.MaxFetchWait < 0 || c.RelayService.ReservationTTL < 0 || c.RelayService.ConnDuration < 0 {
		return errors.New("durations must not be negative")
	}
	if c.Domain != "" {
		if err := federation.CheckDomain(c.Domain); err != nil {
			return fmt.Errorf("domain: %w (use lowercase letters, digits, '-' and '.')", err)
		}
	}
	if _, err := c.p2pListen(); err != nil {
		return err
	}
	if c.MDNS && !c.P2P {
		return errors.New("mdns needs p2p: the record announces the libp2p address; turn mdns off with p2p")
	}
	if _, err := c.federation(); err != nil {
		return err
	}
	for _, n := range []int{c.Limits.MaxPayload, c.Limits.MaxKeyPackage, c.Limits.MaxKeyPackages, c.Limits.MaxBatchRecipients,
		c.Limits.MaxHybridKeys, c.Limits.MaxEndpoint, c.Limits.MaxFetchBytes, c.Limits.MaxInboxDepth, c.Limits.MaxWaitsPerConn,
		c.Limits.MaxConnections, c.Rates.PerTokenBurst, c.Rates.PerAddressBurst, c.Rates.FailedLoginsPerUserBurst, c.Rates.FailedLoginsPerAddrBurst,
		c.RelayService.MaxReservations, c.RelayService.MaxReservationsPerIP, c.RelayService.MaxCircuits} {
		if n < 0 {
			return errors.New("limits must not be negative")
		}
	}
	if c.RelayService.ConnData < 0 {
		return errors.New("limits must not be negative")
	}
	if c.Federation.MaxHops < 0 || c.Federation.Burst < 0 || c.Federation.MaxQueue < 0 || c.Federation.RetryMax < 0 {
		return errors.New("limits must not be negative")
	}
	for _, r := range []float64{c.Rates.PerToken, c.Rates.PerAddress, c.Rates.FailedLoginsPerUser, c.Rates.FailedLoginsPerAddr, c.Federation.Rate} {
		if r < 0 || r != r {
			return errors.New("rates must not be negative")
		}
	}
	return nil
}

func logLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// parseSwitch accepts on/off as well as Go's boolean spellings.
func parseSwitch(v string, out *bool) error {
	switch strings.ToLower(v) {
	case "on", "yes":
		*out = true
		return nil
	case "off", "no":
		*out = false
		return nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return fmt.Errorf("%q is not on or off", v)
	}
	*out = b
	return nil
}

func parseDuration(v string, out *time.Duration) error {
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return fmt.Errorf("%q is not a duration like 24h or 90m", v)
	}
	*out = d
	return nil
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func (c *serveConfig) p2pListen() ([]ma.Multiaddr, error) {
	var out []ma.Multiaddr
	for _, s := range c.P2PListen {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("p2p_listen %q: %w", s, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// federation returns the federation configuration, nil when no peers are
// listed. The certificate is the server's (filled in by node/server).
func (c *serveConfig) federation() (*federation.Config, error) {
	fc := c.Federation
	if len(fc.Peers) == 0 {
		return nil, nil
	}
	if c.Domain == "" {
		return nil, errors.New("federation needs --domain (domain = \"…\"): the name its peers know this server by")
	}
	out := &federation.Config{
		Listen: fc.Listen, MaxHops: fc.MaxHops, Rate: fc.Rate, Burst: fc.Burst, RetryMax: fc.RetryMax,
	}
	for i, p := range fc.Peers {
		if err := federation.CheckDomain(p.Domain); err != nil {
			return nil, fmt.Errorf("federation peer %d: %w", i+1, err)
		}
		if _, _, err := net.SplitHostPort(p.Address); err != nil {
			return nil, fmt.Errorf("federation peer %s: address %q is not host:port", p.Domain, p.Address)
		}
		fp, err := rpc.ParseFingerprint(p.Fingerprint)
		if err != nil {
			return nil, fmt.Errorf("federation peer %s: %w (the fingerprint its qpq serve prints)", p.Domain, err)
		}
		out.Peers = append(out.Peers, federation.Peer{Domain: p.Domain, Addr: p.Address, Fingerprint: fp})
	}
	return out, nil
}

// serverConfig turns the command's configuration into the server's.
func (c *serveConfig) serverConfig(logger *slog.Logger) (server.Config, error) {
	listen, err := c.p2pListen()
	if err != nil {
		return server.Config{}, err
	}
	rc := c.relayConfig(logger.With("component", "relay"))
	if rc.Federation, err = c.federation(); err != nil {
		return server.Config{}, err
	}
	rs := c.RelayService
	return server.Config{
		Relay:          rc,
		Listen:         c.Listen,
		TLSCertFile:    c.TLSCert,
		TLSKeyFile:     c.TLSKey,
		MaxConnections: c.Limits.MaxConnections,
		Metrics:        c.Metrics,
		P2P: server.P2PConfig{
			Enable: c.P2P,
			Listen: listen,
			Relay: p2p.RelayServiceConfig{
				MaxReservations: rs.MaxReservations, MaxReservationsPerIP: rs.MaxReservationsPerIP,
				MaxCircuits: rs.MaxCircuits, ReservationTTL: rs.ReservationTTL,
				ConnDuration: rs.ConnDuration, ConnData: rs.ConnData,
			},
		},
		MDNS:   server.MDNSConfig{Enable: c.MDNS, Interfaces: c.MDNSIfaces, Advertise: c.MDNSAdvertise},
		Logger: logger,
	}, nil
}

// relayConfig turns the command's configuration into the relay's.
func (c *serveConfig) relayConfig(logger *slog.Logger) relay.Config {
	l, r := c.Limits, c.Rates
	return relay.Config{
		DataDir: c.Data,
		Domain:  c.Domain,
		Limits: relay.Limits{
			MaxPayload: l.MaxPayload, MaxKeyPackage: l.MaxKeyPackage, MaxKeyPackages: l.MaxKeyPackages,
			MaxBatchRecipients: l.MaxBatchRecipients, MaxHybridKeys: l.MaxHybridKeys, MaxEndpoint: l.MaxEndpoint,
			MaxFetchBytes: l.MaxFetchBytes, MaxInboxDepth: l.MaxInboxDepth, MaxWaitsPerConn: l.MaxWaitsPerConn,
			MaxRelayQueue: c.Federation.MaxQueue,
		},
		Rates: relay.RateLimits{
			Off:                 !c.RateLimit,
			PerToken:            relay.Rate{PerSecond: r.PerToken, Burst: r.PerTokenBurst},
			PerAddress:          relay.Rate{PerSecond: r.PerAddress, Burst: r.PerAddressBurst},
			FailedLoginsPerUser: relay.Rate{PerSecond: r.FailedLoginsPerUser, Burst: r.FailedLoginsPerUserBurst},
			FailedLoginsPerAddr: relay.Rate{PerSecond: r.FailedLoginsPerAddr, Burst: r.FailedLoginsPerAddrBurst},
		},
		TokenLifetime: c.TokenLifetime,
		MaxFetchWait:  l.MaxFetchWait,
		Logger:        logger,
	}
}
