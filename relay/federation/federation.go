package federation

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/relay/ratelimit"
	"github.com/quicproquo/qpq/relay/store"
	"github.com/quicproquo/qpq/rpc"
	"github.com/quicproquo/qpq/schema/fedschema"
)

// Handler answers what peers ask of this server; package relay implements
// it. Its methods are called from many goroutines at once, after the
// peer, the origin, the hops and every field's bounds were checked.
// Errors should carry an errcode: the peer's sender retries
// resource-exhausted and internal, and drops a delivery refused with
// invalid-argument, permission-denied, not-found, already-exists or
// failed-precondition.
type Handler interface {
	// Deliver stores a relayed delivery (store.Deliver with an Incoming
	// built from r) and returns the recipients' seqs, or duplicate for a
	// delivery applied before.
	Deliver(ctx context.Context, r Relay) (seqs []uint64, duplicate bool, err error)
	// FetchKeyPackage, FetchHybridKey, ResolveUser and CreateChannel are
	// the NodeService methods of the same names for a user of this
	// server, or passed on to its home if it lives elsewhere.
	FetchKeyPackage(ctx context.Context, req Request, identity store.Key) ([]byte, error)
	FetchHybridKey(ctx context.Context, req Request, identity store.Key) ([]byte, error)
	ResolveUser(ctx context.Context, req Request, username string) ([]byte, error)
	CreateChannel(ctx context.Context, req Request, caller, peer store.Key) (store.ChannelID, bool, error)
	// ResolveIdentity is the username of identity if it is a user of this
	// server (never one of another domain's: each server names only its
	// own users), or "".
	ResolveIdentity(ctx context.Context, req Request, identity store.Key) (string, error)
}

// Federation is this server's side of the federation: the listener peers
// call, the connections to peers, and a sender per peer that delivers the
// store's queue for it. Its methods are safe for concurrent use.
type Federation struct {
	cfg    Config
	st     *store.Store
	h      Handler
	lim    limits
	log    *slog.Logger
	m      *metrics
	stream [store.StreamSize]byte // this run's relay stream id
	peers  map[string]*peerConn   // by domain; fixed after New
	byPin  map[rpc.Fingerprint]string
	rate   *ratelimit.Keyed // nil when off
	ln     *rpc.Listener    // nil without Config.Listen

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	started   atomic.Bool // Start has run
}

// New sets up federation and binds the listener (if Config.Listen is
// set); Start then serves it and starts a sender for every peer. h
// answers peers' calls (it may be nil only without a listener); st holds
// the queues. Close stops it, started or not.
func New(cfg Config, st *store.Store, h Handler) (*Federation, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if cfg.Listen != "" && h == nil {
		return nil, errors.New("federation: a listener needs a Handler to answer peers")
	}
	cfg.setDefaults()
	f := &Federation{
		cfg:   cfg,
		st:    st,
		h:     h,
		lim:   limits{maxHops: cfg.MaxHops, maxPayload: cfg.MaxPayload, maxBatch: cfg.MaxBatch},
		log:   cfg.Logger,
		peers: make(map[string]*peerConn),
		byPin: make(map[rpc.Fingerprint]string),
	}
	if _, err := rand.Read(f.stream[:]); err != nil {
		return nil, fmt.Errorf("federation: %w", err)
	}
	if !cfg.RateOff {
		f.rate = ratelimit.New(cfg.Rate, cfg.Burst, cfg.Now)
	}
	for _, p := range cfg.Peers {
		f.peers[p.Domain] = &peerConn{f: f, p: p}
		f.byPin[p.Fingerprint] = p.Domain
	}
	f.m = newMetrics(cfg.Registry, st, cfg.Peers)
	if cfg.Listen != "" {
		ln, err := rpc.ListenTLS(cfg.Listen, f.serverTLS(), rpc.ListenOptions{
			Serve:  rpc.ServeOptions{MaxMessageSize: uint64(cfg.MaxPayload + rpcHeadroom), Logger: f.log},
			Logger: f.log,
		})
		if err != nil {
			return nil, fmt.Errorf("federation: %w", err)
		}
		f.ln = ln
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	return f, nil
}

// Start serves peers on the listener and starts the senders. It is
// separate from New so that the Handler's owner can finish setting up
// (keep the Federation New returned) before the first peer's call
// reaches it. Call it once.
func (f *Federation) Start() {
	f.started.Store(true)
	if f.ln != nil {
		f.goroutine(func() {
			if err := f.ln.ServeHooks(f.ctx, f.admit); err != nil {
				f.log.Error("federation listener stopped", "err", err)
			}
		})
	}
	for _, pc := range f.peers {
		f.goroutine(func() { f.send(f.ctx, pc) })
	}
	f.goroutine(f.sweepMarks)
}

func (f *Federation) goroutine(fn func()) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		fn()
	}()
}

// Close stops the listener, the senders and every connection, and waits
// for them. Queued deliveries stay in the store for the next start. It is
// idempotent.
func (f *Federation) Close() error {
	f.closeOnce.Do(func() {
		// Cancelling ends ServeHooks, which closes every connection (so
		// peers learn at once) and then the listener; one never served
		// is closed here.
		f.cancel()
		f.wg.Wait()
		if !f.started.Load() && f.ln != nil {
			f.ln.Close()
		}
		for _, pc := range f.peers {
			pc.close()
		}
	})
	return nil
}

// Addr returns the listener's address, or nil without one.
func (f *Federation) Addr() net.Addr {
	if f.ln == nil {
		return nil
	}
	return f.ln.Addr()
}

// Domain returns this server's domain.
func (f *Federation) Domain() string { return f.cfg.Domain }

// MaxHops returns the hop limit.
func (f *Federation) MaxHops() int { return f.cfg.MaxHops }

// IsPeer reports whether domain is a configured peer.
func (f *Federation) IsPeer(domain string) bool { return f.peers[domain] != nil }

func (f *Federation) serverTLS() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{f.cfg.Certificate},
		NextProtos:   []string{ALPN},
		MinVersion:   tls.VersionTLS13,
		// Any certificate completes the handshake; admit then checks its
		// pin, so that an unknown server is told why it was refused.
		ClientAuth: tls.RequireAnyClientCert,
	}
}

// admit names the peer of a new connection by its certificate, or
// refuses it.
func (f *Federation) admit(p rpc.Peer) (capnp.ClientHook, error) {
	if len(p.TLS.PeerCertificates) == 0 {
		f.m.refused.WithLabelValues("no-certificate").Inc()
		f.log.Warn("federation: refused a connection without a client certificate", "addr", p.Addr)
		return nil, errors.New("federation: present your home server's certificate")
	}
	fp := rpc.FingerprintOf(p.TLS.PeerCertificates[0].Raw)
	domain, ok := f.byPin[fp]
	if !ok {
		f.m.refused.WithLabelValues("unknown-certificate").Inc()
		f.log.Warn("federation: refused a server whose certificate is not pinned for any peer", "addr", p.Addr, "fingerprint", fp.String())
		return nil, fmt.Errorf("federation: %s has pinned no peer with certificate %s; its operator must add your domain, address and this fingerprint to its peers", f.cfg.Domain, fp)
	}
	f.log.Debug("federation: peer connected", "peer", domain, "addr", p.Addr)
	return fedschema.FederationService_NewServer(&service{f: f, peer: domain}), nil
}

// sweepMarks deletes old de-duplication marks once a day.
func (f *Federation) sweepMarks() {
	t := time.NewTicker(24 * time.Hour)
	defer t.Stop()
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-t.C:
			if n, err := f.st.SweepIncoming(f.cfg.Now().Add(-f.cfg.MarkLifetime)); err != nil {
				f.log.Error("federation: sweeping relay marks", "err", err)
			} else if n > 0 {
				f.log.Debug("federation: swept relay marks", "count", n)
			}
		}
	}
}
