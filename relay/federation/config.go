package federation

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quicproquo/qpq/rpc"
)

// ALPN is the TLS application protocol of FederationService.
const ALPN = "qpq-fed/1"

// Defaults of Config's zero values.
const (
	DefaultMaxHops     = 4
	DefaultRetryMin    = 250 * time.Millisecond
	DefaultRetryMax    = 30 * time.Second
	DefaultCallTimeout = 15 * time.Second
	DefaultDialTimeout = 5 * time.Second
	DefaultMaxPayload  = 1 << 20
	DefaultMaxBatch    = 100
	// DefaultRate and DefaultBurst bound the calls one peer may make:
	// generous for a busy community server, a bound for a broken one.
	DefaultRate  = 2000.0
	DefaultBurst = 4000
	// DefaultMarkLifetime is how long a relay stream's de-duplication
	// mark is kept after its last delivery.
	DefaultMarkLifetime = 30 * 24 * time.Hour

	// MaxHopsLimit bounds MaxHops: hops travel in one byte.
	MaxHopsLimit = 255
	// rpcHeadroom is what a call may hold beside its payload.
	rpcHeadroom = 1 << 20
)

// Peer is another domain's home server.
type Peer struct {
	Domain string
	// Addr is its federation address, host:port (UDP).
	Addr string
	// Fingerprint pins its certificate, in both directions.
	Fingerprint rpc.Fingerprint
}

// Config configures a Federation. Domain, Certificate and Peers are
// required; the zero value of every other field means its default.
type Config struct {
	// Domain is this server's (CheckDomain form).
	Domain string
	// Listen is the UDP address peers call; empty means no listener
	// (this server calls out only).
	Listen string
	// Certificate is this server's; its leaf's fingerprint is what peers
	// pin.
	Certificate tls.Certificate
	Peers       []Peer
	// MaxHops bounds how far a request travels (DefaultMaxHops).
	MaxHops int
	// MaxPayload bounds a relayed payload (DefaultMaxPayload), and
	// MaxBatch the recipients of one relayBatchEnqueue (DefaultMaxBatch).
	MaxPayload, MaxBatch int
	// Rate and Burst bound the calls of each peer (DefaultRate,
	// DefaultBurst); RateOff turns the limit off.
	Rate    float64
	Burst   int
	RateOff bool
	// RetryMin and RetryMax bound the backoff of a sender whose peer is
	// unreachable (DefaultRetryMin, DefaultRetryMax).
	RetryMin, RetryMax time.Duration
	// CallTimeout bounds one call to a peer, dial included
	// (DefaultCallTimeout), and DialTimeout a dial: a peer that is down
	// often answers nothing at all (DefaultDialTimeout).
	CallTimeout, DialTimeout time.Duration
	// MarkLifetime is how long a relay stream's de-duplication mark is
	// kept (DefaultMarkLifetime).
	MarkLifetime time.Duration
	// Logger; nil discards. Logs name domains, methods and errors, never
	// payloads or keys.
	Logger *slog.Logger
	// Registry receives the metrics; nil means none are exported.
	Registry prometheus.Registerer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.MaxHops, DefaultMaxHops)
	def(&c.MaxPayload, DefaultMaxPayload)
	def(&c.MaxBatch, DefaultMaxBatch)
	def(&c.Burst, DefaultBurst)
	if c.Rate <= 0 {
		c.Rate = DefaultRate
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	defd(&c.RetryMin, DefaultRetryMin)
	defd(&c.RetryMax, DefaultRetryMax)
	c.RetryMax = max(c.RetryMax, c.RetryMin)
	defd(&c.CallTimeout, DefaultCallTimeout)
	defd(&c.DialTimeout, DefaultDialTimeout)
	defd(&c.MarkLifetime, DefaultMarkLifetime)
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

// Check reports what is wrong with c, if anything: the domain, each peer
// (domain, address, fingerprint; none twice, none this server's own
// domain or certificate) and the certificate.
func (c *Config) Check() error {
	if err := CheckDomain(c.Domain); err != nil {
		return fmt.Errorf("federation: this server's domain: %w", err)
	}
	if len(c.Certificate.Certificate) == 0 {
		return errors.New("federation: no certificate")
	}
	if c.MaxHops > MaxHopsLimit {
		return fmt.Errorf("federation: max hops %d is above %d", c.MaxHops, MaxHopsLimit)
	}
	own := rpc.CertificateFingerprint(c.Certificate)
	domains := make(map[string]bool)
	pins := make(map[rpc.Fingerprint]string)
	for _, p := range c.Peers {
		if err := CheckDomain(p.Domain); err != nil {
			return fmt.Errorf("federation: peer: %w", err)
		}
		if p.Domain == c.Domain {
			return fmt.Errorf("federation: peer %s is this server's own domain", p.Domain)
		}
		if domains[p.Domain] {
			return fmt.Errorf("federation: peer %s is configured twice", p.Domain)
		}
		domains[p.Domain] = true
		if _, _, err := net.SplitHostPort(p.Addr); err != nil {
			return fmt.Errorf("federation: peer %s: address %q is not host:port", p.Domain, p.Addr)
		}
		if p.Fingerprint.IsZero() {
			return fmt.Errorf("federation: peer %s: no fingerprint pinned", p.Domain)
		}
		if p.Fingerprint == own {
			return fmt.Errorf("federation: peer %s: the fingerprint is this server's own", p.Domain)
		}
		if other, dup := pins[p.Fingerprint]; dup {
			// A certificate names one peer: otherwise the origin of a
			// call could not be checked.
			return fmt.Errorf("federation: peers %s and %s have the same fingerprint", other, p.Domain)
		}
		pins[p.Fingerprint] = p.Domain
	}
	return nil
}
