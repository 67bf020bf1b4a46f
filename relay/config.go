package relay

import (
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quicproquo/qpq/relay/federation"
	"github.com/quicproquo/qpq/relay/store"
)

// Defaults of Config's zero values.
const (
	DefaultMaxPayload         = 1 << 20
	DefaultMaxKeyPackage      = 64 << 10
	DefaultMaxBatchRecipients = 100
	DefaultMaxHybridKeys      = 256
	DefaultMaxEndpoint        = 4 << 10
	DefaultMaxFetchBytes      = 8 << 20
	DefaultMaxWaitsPerConn    = 16
	DefaultMaxLoginsPerConn   = 4
	// DefaultMaxFetchWait caps fetchWait's timeoutMs: a longer wait
	// returns empty after this and the client asks again.
	DefaultMaxFetchWait = 60 * time.Second
	// DefaultEndpointMaxAge is how long a published endpoint is handed
	// out; nodes republish well within it.
	DefaultEndpointMaxAge = 24 * time.Hour
)

// HybridKeySize is the size of an X-Wing (MLKEM768X25519) public key.
const HybridKeySize = 1216

// Limits bound everything a client controls. The zero value of each field
// means its default.
type Limits struct {
	MaxPayload         int // bytes per enqueued payload (DefaultMaxPayload)
	MaxKeyPackage      int // bytes per key package (DefaultMaxKeyPackage)
	MaxBatchRecipients int // recipients per batchEnqueue (DefaultMaxBatchRecipients)
	MaxHybridKeys      int // identities per fetchHybridKeys (DefaultMaxHybridKeys)
	MaxEndpoint        int // bytes per nodeAddr (DefaultMaxEndpoint)
	MaxFetchBytes      int // payload bytes per fetch/fetchWait/peek reply (DefaultMaxFetchBytes)
	MaxWaitsPerConn    int // concurrent fetchWaits per connection (DefaultMaxWaitsPerConn)
	MaxLoginsPerConn   int // logins in progress per connection (DefaultMaxLoginsPerConn)
	MaxInboxDepth      int // messages per inbox (store.DefaultMaxInboxDepth)
	MaxKeyPackages     int // key packages per identity (store.DefaultMaxKeyPackages)
	MaxRelayQueue      int // deliveries waiting for one other domain's server (store.DefaultMaxRelayQueue)
}

func (l *Limits) setDefaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.MaxPayload, DefaultMaxPayload)
	def(&l.MaxKeyPackage, DefaultMaxKeyPackage)
	def(&l.MaxBatchRecipients, DefaultMaxBatchRecipients)
	def(&l.MaxHybridKeys, DefaultMaxHybridKeys)
	def(&l.MaxEndpoint, DefaultMaxEndpoint)
	def(&l.MaxFetchBytes, DefaultMaxFetchBytes)
	def(&l.MaxWaitsPerConn, DefaultMaxWaitsPerConn)
	def(&l.MaxLoginsPerConn, DefaultMaxLoginsPerConn)
	def(&l.MaxInboxDepth, store.DefaultMaxInboxDepth)
	def(&l.MaxKeyPackages, store.DefaultMaxKeyPackages)
	def(&l.MaxRelayQueue, store.DefaultMaxRelayQueue)
	l.MaxFetchBytes = max(l.MaxFetchBytes, l.MaxPayload) // one message always fits
}

// Rate is a token bucket: PerSecond refill, Burst capacity.
type Rate struct {
	PerSecond float64
	Burst     int
}

// Default rates: sized for heavy legitimate use (thousands of requests
// per second per token), strict for failed logins.
var (
	DefaultPerToken            = Rate{PerSecond: 2000, Burst: 4000}
	DefaultPerAddress          = Rate{PerSecond: 5000, Burst: 10000}
	DefaultFailedLoginsPerUser = Rate{PerSecond: 1.0 / 30, Burst: 10}
	DefaultFailedLoginsPerAddr = Rate{PerSecond: 1.0 / 10, Burst: 30}
)

// RateLimits configures the limiters. A zero PerSecond or Burst means
// its default.
type RateLimits struct {
	// Off disables every rate limit (benchmarks, conformance runs).
	Off                 bool
	PerToken            Rate // requests per session token
	PerAddress          Rate // requests per client address (IPv6: per /64)
	FailedLoginsPerUser Rate // failed OPAQUE logins per username
	FailedLoginsPerAddr Rate // failed OPAQUE logins per address
}

func (r *RateLimits) setDefaults() {
	def := func(v *Rate, d Rate) {
		if v.PerSecond <= 0 {
			v.PerSecond = d.PerSecond
		}
		if v.Burst <= 0 {
			v.Burst = d.Burst
		}
	}
	def(&r.PerToken, DefaultPerToken)
	def(&r.PerAddress, DefaultPerAddress)
	def(&r.FailedLoginsPerUser, DefaultFailedLoginsPerUser)
	def(&r.FailedLoginsPerAddr, DefaultFailedLoginsPerAddr)
}

// Config configures a Relay. The zero value of every field but DataDir
// means its documented default.
type Config struct {
	// DataDir holds the database (store.FileName). Required.
	DataDir string
	// Domain is this server's domain: its users are name@Domain
	// (federation.CheckDomain form). Empty means none: only bare names
	// resolve.
	Domain string
	Limits Limits
	Rates  RateLimits
	// TokenLifetime is how long a session token is valid (24 h).
	TokenLifetime time.Duration
	// LoginTTL is how long a login may take between start and finish (1 min).
	LoginTTL time.Duration
	// MaxFetchWait caps fetchWait's timeout (DefaultMaxFetchWait).
	MaxFetchWait time.Duration
	// EndpointMaxAge is how long a published endpoint is handed out
	// (DefaultEndpointMaxAge).
	EndpointMaxAge time.Duration
	// BatchSize caps the writes sharing one commit (store.Options).
	BatchSize int
	// Logger receives structured logs; nil discards them. Logs never hold
	// tokens, passwords, keys or payloads.
	Logger *slog.Logger
	// Registry receives the metrics; nil means a new registry (see
	// Relay.Registry).
	Registry *prometheus.Registry
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// P2PAddr returns the JSON of the libp2p peer.AddrInfo of the
	// server's circuit relay (p2p.EncodeEndpoint), which serverInfo hands
	// to clients so that their nodes find their relay; nil, or a nil
	// result, means none. It is called once per serverInfo call.
	P2PAddr func() []byte
	// Federation, if set, relays for users of other domains through their
	// home servers (package federation). Domain above is this server's;
	// Open fills in Federation's Domain, MaxPayload, MaxBatch, Logger,
	// Registry and Now from this Config; the caller sets its Certificate,
	// Listen and Peers.
	Federation *federation.Config
}

func (c *Config) setDefaults() {
	c.Limits.setDefaults()
	c.Rates.setDefaults()
	if c.MaxFetchWait <= 0 {
		c.MaxFetchWait = DefaultMaxFetchWait
	}
	if c.EndpointMaxAge <= 0 {
		c.EndpointMaxAge = DefaultEndpointMaxAge
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}
