package relay

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quicproquo/qpq/relay/auth"
	"github.com/quicproquo/qpq/relay/federation"
	"github.com/quicproquo/qpq/relay/ratelimit"
	"github.com/quicproquo/qpq/relay/store"
	"github.com/quicproquo/qpq/rpc"
	"github.com/quicproquo/qpq/schema"
)

// tokenSweepInterval is how often expired session tokens are deleted.
const tokenSweepInterval = 10 * time.Minute

// Relay is a home server's state and policy, shared by its connections.
type Relay struct {
	cfg      Config
	st       *store.Store
	accounts *auth.Accounts
	m        *metrics

	perToken, perAddr *ratelimit.Keyed       // nil when rate limits are off
	fed               *federation.Federation // nil without federation
	nameAsks          askLog                 // when a peer was last asked to name a key

	stop      context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Open opens the relay's state in cfg.DataDir, creating it on first start,
// and starts its housekeeping (expired-token sweeps).
func Open(cfg Config) (*Relay, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("relay: no data directory configured")
	}
	if cfg.Domain != "" {
		if err := federation.CheckDomain(cfg.Domain); err != nil {
			return nil, fmt.Errorf("relay: domain: %w", err)
		}
	}
	cfg.setDefaults()
	st, err := store.Open(cfg.DataDir, store.Options{
		MaxInboxDepth:  cfg.Limits.MaxInboxDepth,
		MaxRelayQueue:  cfg.Limits.MaxRelayQueue,
		MaxKeyPackages: cfg.Limits.MaxKeyPackages,
		BatchSize:      cfg.BatchSize,
		Now:            cfg.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	r := &Relay{cfg: cfg, st: st}
	var failedUser, failedAddr *ratelimit.Keyed
	if !cfg.Rates.Off {
		rl := cfg.Rates
		r.perToken = ratelimit.New(rl.PerToken.PerSecond, rl.PerToken.Burst, cfg.Now)
		r.perAddr = ratelimit.New(rl.PerAddress.PerSecond, rl.PerAddress.Burst, cfg.Now)
		failedUser = ratelimit.New(rl.FailedLoginsPerUser.PerSecond, rl.FailedLoginsPerUser.Burst, cfg.Now)
		failedAddr = ratelimit.New(rl.FailedLoginsPerAddr.PerSecond, rl.FailedLoginsPerAddr.Burst, cfg.Now)
	}
	r.accounts, err = auth.New(st, auth.Config{
		TokenLifetime:       cfg.TokenLifetime,
		LoginTTL:            cfg.LoginTTL,
		FailedLoginsPerUser: failedUser,
		FailedLoginsPerAddr: failedAddr,
		Now:                 cfg.Now,
	})
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("relay: %w", err)
	}
	r.m = newMetrics(cfg.Registry, st)
	if cfg.Federation != nil {
		if err := r.startFederation(); err != nil {
			st.Close()
			return nil, err
		}
	}

	ctx, stop := context.WithCancel(context.Background())
	r.stop = stop
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.sweepTokens(ctx)
	}()
	return r, nil
}

func (r *Relay) sweepTokens(ctx context.Context) {
	t := time.NewTicker(tokenSweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n, err := r.accounts.DeleteExpired(); err != nil {
				r.cfg.Logger.Error("sweeping expired tokens", "err", err)
			} else if n > 0 {
				r.cfg.Logger.Debug("swept expired tokens", "count", n)
			}
		}
	}
}

// Close stops housekeeping and federation and closes the store. Serve must
// have returned.
// It is idempotent.
func (r *Relay) Close() error {
	r.closeOnce.Do(func() {
		r.stop()
		r.wg.Wait()
		if r.fed != nil {
			r.fed.Close()
		}
		r.closeErr = r.st.Close()
	})
	return r.closeErr
}

// Store returns the relay's store.
func (r *Relay) Store() *store.Store { return r.st }

// Registry returns the registry holding the relay's metrics.
func (r *Relay) Registry() *prometheus.Registry { return r.cfg.Registry }

// Serve answers NodeService on ln until ctx ends, authenticating callers
// by session token.
func (r *Relay) Serve(ctx context.Context, ln *rpc.Listener) error {
	return ln.Serve(ctx, func(p rpc.Peer) schema.NodeService_Server {
		return r.NewService(ServiceOptions{Auth: r.TokenAuthenticator(), Addr: p.Addr.Addr(), Accounts: true})
	})
}

// rateKey returns the rate-limit key of an address: the address itself
// for IPv4, its /64 for IPv6 (one host usually holds a whole /64); "" for
// no address (no per-address limit).
func rateKey(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	if a.Is6() && !a.Is4In6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.Unmap().String()
}
