package federation

import (
	"context"

	"github.com/quicproquo/qpq/relay/store"
	"github.com/quicproquo/qpq/relay/wire"
	"github.com/quicproquo/qpq/rpc/errcode"
	"github.com/quicproquo/qpq/schema/fedschema"
)

// service answers FederationService for one connection, whose certificate
// is pinned for peer.
type service struct {
	f    *Federation
	peer string
}

var _ fedschema.FederationService_Server = (*service)(nil)

var errPeerRate = errcode.New(errcode.ResourceExhausted, "too many calls from your server; slow down")

// loseAnswer, set only by tests (export_test.go), makes a committed
// delivery's answer fail as if the connection had dropped it, so that the
// sender's retry is seen to arrive once.
var loseAnswer func() bool

// done records a call's outcome and logs what an operator must see.
func (s *service) done(method string, err error) error {
	code := "ok"
	if err != nil {
		c := errcode.Of(err)
		code = string(c)
		switch {
		case c == errcode.Internal || errcode.Local(err):
			s.f.log.Error("federation: call failed", "peer", s.peer, "method", method, "err", err)
		case c == errcode.Unauthenticated:
			s.f.log.Warn("federation: call refused", "peer", s.peer, "method", method, "err", err)
		}
	}
	s.f.m.calls.WithLabelValues(s.peer, method, code).Inc()
	return err
}

// request admits a call (rate limit) and reads its origin and hops.
func (s *service) request(origin func() (string, error), hops uint8) (Request, error) {
	if s.f.rate != nil && !s.f.rate.Allow(s.peer) {
		return Request{}, errPeerRate
	}
	return s.f.lim.request(s.peer, origin, hops)
}

// RelayEnqueue stores a delivery for one local recipient. Deliveries are
// answered in the order they arrive on the connection (no call.Go): the
// sender's queue order is the inbox order.
func (s *service) RelayEnqueue(ctx context.Context, call fedschema.FederationService_relayEnqueue) error {
	return s.done("relayEnqueue", func() error {
		if s.f.rate != nil && !s.f.rate.Allow(s.peer) {
			return errPeerRate
		}
		r, err := s.f.lim.relayOne(s.peer, call.Args())
		if err != nil {
			return err
		}
		seqs, dup, err := s.f.h.Deliver(ctx, r)
		if err != nil {
			return err
		}
		if loseAnswer != nil && loseAnswer() {
			return errcode.New(errcode.Internal, "test: the answer was lost")
		}
		res, err := call.AllocResults()
		if err != nil {
			return err
		}
		res.SetDuplicate(dup)
		if !dup && len(seqs) == 1 {
			res.SetSeq(seqs[0])
		}
		return nil
	}())
}

// RelayBatchEnqueue stores a delivery for many local recipients.
func (s *service) RelayBatchEnqueue(ctx context.Context, call fedschema.FederationService_relayBatchEnqueue) error {
	return s.done("relayBatchEnqueue", func() error {
		if s.f.rate != nil && !s.f.rate.Allow(s.peer) {
			return errPeerRate
		}
		r, err := s.f.lim.relayBatch(s.peer, call.Args())
		if err != nil {
			return err
		}
		seqs, dup, err := s.f.h.Deliver(ctx, r)
		if err != nil {
			return err
		}
		res, err := call.AllocResults()
		if err != nil {
			return err
		}
		res.SetDuplicate(dup)
		if dup {
			return nil
		}
		out, err := res.NewSeqs(int32(len(seqs)))
		if err != nil {
			return err
		}
		for i, seq := range seqs {
			out.Set(i, seq)
		}
		return nil
	}())
}

// ProxyFetchKeyPackage pops a key package of a local user. Reads step
// aside (call.Go) so that a slow one never holds up deliveries.
func (s *service) ProxyFetchKeyPackage(ctx context.Context, call fedschema.FederationService_proxyFetchKeyPackage) error {
	call.Go()
	p := call.Args()
	return s.keyRead(ctx, "proxyFetchKeyPackage", p.Origin, p.Hops(), p.IdentityKey, s.f.h.FetchKeyPackage, func(b []byte) error {
		res, err := call.AllocResults()
		if err != nil {
			return err
		}
		return res.SetPackage(b)
	})
}

// ProxyFetchHybridKey returns a local user's hybrid key.
func (s *service) ProxyFetchHybridKey(ctx context.Context, call fedschema.FederationService_proxyFetchHybridKey) error {
	call.Go()
	p := call.Args()
	return s.keyRead(ctx, "proxyFetchHybridKey", p.Origin, p.Hops(), p.IdentityKey, s.f.h.FetchHybridKey, func(b []byte) error {
		res, err := call.AllocResults()
		if err != nil {
			return err
		}
		return res.SetHybridPublicKey(b)
	})
}

// keyRead answers a read of one identity's data: read gets it, set puts
// it in the results.
func (s *service) keyRead(ctx context.Context, method string, origin func() (string, error), hops uint8, identityKey func() ([]byte, error),
	read func(context.Context, Request, store.Key) ([]byte, error), set func([]byte) error) error {
	return s.done(method, func() error {
		req, err := s.request(origin, hops)
		if err != nil {
			return err
		}
		id, err := wire.Key("identityKey", identityKey)
		if err != nil {
			return err
		}
		b, err := read(ctx, req, id)
		if err != nil {
			return err
		}
		return set(b)
	}())
}

// ProxyResolveUser resolves a username registered here.
func (s *service) ProxyResolveUser(ctx context.Context, call fedschema.FederationService_proxyResolveUser) error {
	call.Go()
	return s.done("proxyResolveUser", func() error {
		p := call.Args()
		req, err := s.request(p.Origin, p.Hops())
		if err != nil {
			return err
		}
		name, err := p.Username()
		if err != nil {
			return wire.Unreadable("username")
		}
		key, err := s.f.h.ResolveUser(ctx, req, name)
		if err != nil {
			return err
		}
		res, err := call.AllocResults()
		if err != nil {
			return err
		}
		return res.SetIdentityKey(key)
	}())
}

// ProxyResolveIdentity names a user registered here by identity key.
func (s *service) ProxyResolveIdentity(ctx context.Context, call fedschema.FederationService_proxyResolveIdentity) error {
	call.Go()
	return s.done("proxyResolveIdentity", func() error {
		p := call.Args()
		req, err := s.request(p.Origin, p.Hops())
		if err != nil {
			return err
		}
		id, err := wire.Key("identityKey", p.IdentityKey)
		if err != nil {
			return err
		}
		name, err := s.f.h.ResolveIdentity(ctx, req, id)
		if err != nil || name == "" {
			return err
		}
		res, err := call.AllocResults()
		if err != nil {
			return err
		}
		return res.SetUsername(name)
	}())
}

// ProxyCreateChannel decides the channel of a remote caller and a local
// user whose key is the lower.
func (s *service) ProxyCreateChannel(ctx context.Context, call fedschema.FederationService_proxyCreateChannel) error {
	call.Go()
	return s.done("proxyCreateChannel", func() error {
		p := call.Args()
		req, err := s.request(p.Origin, p.Hops())
		if err != nil {
			return err
		}
		caller, err := wire.Key("callerKey", p.CallerKey)
		if err != nil {
			return err
		}
		peer, err := wire.Key("peerKey", p.PeerKey)
		if err != nil {
			return err
		}
		if caller == peer {
			return errcode.New(errcode.InvalidArgument, "callerKey and peerKey are the same")
		}
		id, wasNew, err := s.f.h.CreateChannel(ctx, req, caller, peer)
		if err != nil {
			return err
		}
		res, err := call.AllocResults()
		if err != nil {
			return err
		}
		res.SetWasNew(wasNew)
		return res.SetChannelId(id[:])
	}())
}

// Health answers "ok" and this server's domain.
func (s *service) Health(_ context.Context, call fedschema.FederationService_health) error {
	return s.done("health", func() error {
		p := call.Args()
		if _, err := s.request(p.Origin, 1); err != nil {
			return err
		}
		res, err := call.AllocResults()
		if err != nil {
			return err
		}
		if err := res.SetStatus("ok"); err != nil {
			return err
		}
		return res.SetDomain(s.f.cfg.Domain)
	}())
}
