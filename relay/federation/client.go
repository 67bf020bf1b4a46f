package federation

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quicproquo/qpq/relay/store"
	"github.com/quicproquo/qpq/rpc"
	"github.com/quicproquo/qpq/rpc/errcode"
	"github.com/quicproquo/qpq/rpc/twoparty"
	"github.com/quicproquo/qpq/schema/fedschema"
)

// PeerError is an answer a peer gave: its code is the peer's (errcode.Of
// finds it), as opposed to failing to reach the peer at all.
type PeerError struct {
	Domain string
	Err    *errcode.Error
}

func (e *PeerError) Error() string {
	return string(e.Err.Code) + ": " + e.Domain + " answered: " + e.Err.Message
}

func (e *PeerError) Unwrap() error { return e.Err }

// peerConn is the connection to one peer, dialed when first needed and
// again after it broke.
type peerConn struct {
	f *Federation
	p Peer

	mu   sync.Mutex // guards the fields below; held while dialing
	qc   *quic.Conn
	conn *twoparty.Conn
	fs   fedschema.FederationService
}

// service returns the peer's FederationService and its QUIC connection,
// dialing if needed. The caller releases the service.
func (pc *peerConn) service(ctx context.Context) (fedschema.FederationService, *quic.Conn, error) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.conn != nil {
		select {
		case <-pc.conn.Done():
			pc.closeLocked()
		default:
			return pc.fs.AddRef(), pc.qc, nil
		}
	}
	if pc.f.ctx.Err() != nil {
		return fedschema.FederationService{}, nil, errcode.New(errcode.FailedPrecondition, "federation is shutting down")
	}
	tlsConf := rpc.PinnedClientTLSConfig(ALPN, pc.p.Fingerprint, false, nil)
	tlsConf.Certificates = []tls.Certificate{pc.f.cfg.Certificate}
	dctx, cancel := context.WithTimeout(ctx, pc.f.cfg.DialTimeout)
	defer cancel()
	qc, st, err := rpc.DialStream(dctx, pc.p.Addr, tlsConf, rpc.DialOptions{})
	if err != nil {
		return fedschema.FederationService{}, nil, pc.unreachable(err)
	}
	pc.qc = qc
	pc.conn = twoparty.NewConn(st, twoparty.Options{
		MaxMessageSize: uint64(pc.f.cfg.MaxPayload + rpcHeadroom),
		Logger:         pc.f.log,
	})
	pc.fs = fedschema.FederationService(pc.conn.Bootstrap())
	return pc.fs.AddRef(), qc, nil
}

// drop closes the connection if it is still fs's, so the next call
// dials afresh.
func (pc *peerConn) drop(fs fedschema.FederationService) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.conn != nil && pc.fs.IsSame(fs) {
		pc.closeLocked()
	}
}

func (pc *peerConn) close() {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.conn != nil {
		pc.closeLocked()
	}
}

func (pc *peerConn) closeLocked() {
	pc.fs.Release()
	pc.conn.Close()
	pc.qc, pc.conn, pc.fs = nil, nil, fedschema.FederationService{}
}

// unreachable turns a failure to reach the peer into the error clients
// and senders see.
func (pc *peerConn) unreachable(err error) error {
	var app *quic.ApplicationError
	if errors.As(err, &app) && app.Remote && app.ErrorCode == rpc.RefusedCode {
		return errcode.Errorf(errcode.PermissionDenied, "%s refused this server: %s", pc.p.Domain, app.ErrorMessage)
	}
	var mismatch *rpc.FingerprintMismatchError
	if errors.As(err, &mismatch) {
		return errcode.Errorf(errcode.FailedPrecondition, "%s presented certificate %s, not the pinned %s", pc.p.Domain, mismatch.Got, mismatch.Want)
	}
	return errcode.Errorf(errcode.FailedPrecondition, "the home server of %s is unreachable: %v", pc.p.Domain, err)
}

// closeCause returns why qc closed (the peer's reason when it refused
// us), or err if it is still up. The RPC layer reports a closed stream
// before quic-go has always recorded the cause: wait for it briefly.
func closeCause(qc *quic.Conn, err error) error {
	t := time.NewTimer(100 * time.Millisecond)
	defer t.Stop()
	select {
	case <-qc.Context().Done():
		if cause := context.Cause(qc.Context()); cause != nil {
			return cause
		}
	case <-t.C:
	}
	return err
}

// call runs one call on the peer: do makes it with the service, within
// CallTimeout. A broken connection is dropped and reported as
// unreachable; an answer from the peer comes back as a *PeerError.
func (pc *peerConn) call(ctx context.Context, method string, do func(context.Context, fedschema.FederationService) error) error {
	ctx, cancel := context.WithTimeout(ctx, pc.f.cfg.CallTimeout)
	defer cancel()
	fs, qc, err := pc.service(ctx)
	if err != nil {
		return err
	}
	defer fs.Release()
	err = do(ctx, fs)
	if err == nil {
		return nil
	}
	err = rpc.CallError(ctx, method, err)
	if errors.Is(err, rpc.ErrDisconnected) || ctx.Err() != nil {
		pc.drop(fs)
		return pc.unreachable(closeCause(qc, err))
	}
	var e *errcode.Error
	if errors.As(err, &e) {
		return &PeerError{Domain: pc.p.Domain, Err: e}
	}
	return err
}

// peer returns the connection to domain, or not-found.
func (f *Federation) peer(domain string) (*peerConn, error) {
	pc := f.peers[domain]
	if pc == nil {
		return nil, errcode.Errorf(errcode.NotFound, "%s is not a federation peer of %s", domain, f.cfg.Domain)
	}
	return pc, nil
}

// outgoing checks a request this server sends with hops.
func (f *Federation) outgoing(domain string, hops int) (*peerConn, error) {
	if hops < 1 || hops > f.cfg.MaxHops {
		return nil, errHopLimit(f.cfg.MaxHops)
	}
	return f.peer(domain)
}

// Health asks domain's server how it is; it returns the status and the
// domain the server says it is.
func (f *Federation) Health(ctx context.Context, domain string) (status, theirs string, err error) {
	pc, err := f.peer(domain)
	if err != nil {
		return "", "", err
	}
	err = pc.call(ctx, "health", func(ctx context.Context, fs fedschema.FederationService) error {
		fut, release := fs.Health(ctx, func(p fedschema.FederationService_health_Params) error {
			return p.SetOrigin(f.cfg.Domain)
		})
		defer release()
		res, err := fut.Struct()
		if err != nil {
			return err
		}
		if status, err = res.Status(); err != nil {
			return err
		}
		theirs, err = res.Domain()
		return err
	})
	return status, theirs, err
}

// FetchKeyPackage is proxyFetchKeyPackage at domain's server.
func (f *Federation) FetchKeyPackage(ctx context.Context, domain string, hops int, id store.Key) ([]byte, error) {
	var out []byte
	err := f.proxy(ctx, domain, hops, "proxyFetchKeyPackage", func(ctx context.Context, fs fedschema.FederationService) error {
		fut, release := fs.ProxyFetchKeyPackage(ctx, func(p fedschema.FederationService_proxyFetchKeyPackage_Params) error {
			p.SetHops(uint8(hops))
			return errors.Join(p.SetOrigin(f.cfg.Domain), p.SetIdentityKey(id[:]))
		})
		defer release()
		res, err := fut.Struct()
		if err == nil {
			out, err = cloneData(res.Package())
		}
		return err
	})
	return out, err
}

// FetchHybridKey is proxyFetchHybridKey at domain's server.
func (f *Federation) FetchHybridKey(ctx context.Context, domain string, hops int, id store.Key) ([]byte, error) {
	var out []byte
	err := f.proxy(ctx, domain, hops, "proxyFetchHybridKey", func(ctx context.Context, fs fedschema.FederationService) error {
		fut, release := fs.ProxyFetchHybridKey(ctx, func(p fedschema.FederationService_proxyFetchHybridKey_Params) error {
			p.SetHops(uint8(hops))
			return errors.Join(p.SetOrigin(f.cfg.Domain), p.SetIdentityKey(id[:]))
		})
		defer release()
		res, err := fut.Struct()
		if err == nil {
			out, err = cloneData(res.HybridPublicKey())
		}
		return err
	})
	return out, err
}

// proxy makes a request of domain's server that this server sends with
// hops.
func (f *Federation) proxy(ctx context.Context, domain string, hops int, method string, do func(context.Context, fedschema.FederationService) error) error {
	pc, err := f.outgoing(domain, hops)
	if err != nil {
		return err
	}
	return pc.call(ctx, method, do)
}

// ResolveUser is proxyResolveUser at domain's server: the identity key of
// name there, or nil.
func (f *Federation) ResolveUser(ctx context.Context, domain string, hops int, name string) ([]byte, error) {
	var out []byte
	err := f.proxy(ctx, domain, hops, "proxyResolveUser", func(ctx context.Context, fs fedschema.FederationService) error {
		fut, release := fs.ProxyResolveUser(ctx, func(p fedschema.FederationService_proxyResolveUser_Params) error {
			p.SetHops(uint8(hops))
			return errors.Join(p.SetOrigin(f.cfg.Domain), p.SetUsername(name))
		})
		defer release()
		res, err := fut.Struct()
		if err != nil {
			return err
		}
		out, err = cloneData(res.IdentityKey())
		return err
	})
	if err == nil && out != nil && len(out) != store.KeySize {
		return nil, &PeerError{Domain: domain, Err: &errcode.Error{Code: errcode.Internal, Message: fmt.Sprintf("resolveUser answered a %d-byte key", len(out))}}
	}
	return out, err
}

// ResolveIdentity is proxyResolveIdentity at domain's server: the
// username there of identity, or "" when it is not one of its users.
// The name is as the peer sent it; the caller checks it.
func (f *Federation) ResolveIdentity(ctx context.Context, domain string, hops int, identity store.Key) (string, error) {
	var out string
	err := f.proxy(ctx, domain, hops, "proxyResolveIdentity", func(ctx context.Context, fs fedschema.FederationService) error {
		fut, release := fs.ProxyResolveIdentity(ctx, func(p fedschema.FederationService_proxyResolveIdentity_Params) error {
			p.SetHops(uint8(hops))
			return errors.Join(p.SetOrigin(f.cfg.Domain), p.SetIdentityKey(identity[:]))
		})
		defer release()
		res, err := fut.Struct()
		if err != nil {
			return err
		}
		out, err = res.Username()
		return err
	})
	return out, err
}

// CreateChannel is proxyCreateChannel at domain's server, whose user peer
// is the lower key of the pair.
func (f *Federation) CreateChannel(ctx context.Context, domain string, hops int, caller, peer store.Key) (store.ChannelID, bool, error) {
	var id []byte
	var wasNew bool
	err := f.proxy(ctx, domain, hops, "proxyCreateChannel", func(ctx context.Context, fs fedschema.FederationService) error {
		fut, release := fs.ProxyCreateChannel(ctx, func(p fedschema.FederationService_proxyCreateChannel_Params) error {
			p.SetHops(uint8(hops))
			return errors.Join(p.SetOrigin(f.cfg.Domain), p.SetCallerKey(caller[:]), p.SetPeerKey(peer[:]))
		})
		defer release()
		res, err := fut.Struct()
		if err != nil {
			return err
		}
		wasNew = res.WasNew()
		id, err = cloneData(res.ChannelId())
		return err
	})
	if err != nil {
		return store.ChannelID{}, false, err
	}
	if len(id) != len(store.ChannelID{}) {
		return store.ChannelID{}, false, &PeerError{Domain: domain, Err: &errcode.Error{Code: errcode.Internal, Message: fmt.Sprintf("createChannel answered a %d-byte channel id", len(id))}}
	}
	return store.ChannelID(id), wasNew, nil
}

// relay sends one queued delivery to pc's peer.
func (f *Federation) relay(ctx context.Context, pc *peerConn, it store.RelayItem) (duplicate bool, err error) {
	set := func(p relaySetters) error {
		p.SetHops(it.Hops)
		rid, err := p.NewRelay()
		if err != nil {
			return err
		}
		rid.SetSeq(it.Seq)
		var ch []byte
		if !it.Channel.IsZero() {
			ch = it.Channel[:]
		}
		return errors.Join(rid.SetStream(f.stream[:]), p.SetOrigin(f.cfg.Domain), p.SetSenderKey(it.From[:]),
			p.SetPayload(it.Payload), p.SetChannelId(ch))
	}
	if len(it.Recipients) == 1 {
		err = pc.call(ctx, "relayEnqueue", func(ctx context.Context, fs fedschema.FederationService) error {
			fut, release := fs.RelayEnqueue(ctx, func(p fedschema.FederationService_relayEnqueue_Params) error {
				return errors.Join(set(p), p.SetRecipientKey(it.Recipients[0][:]))
			})
			defer release()
			res, err := fut.Struct()
			duplicate = err == nil && res.Duplicate()
			return err
		})
		return duplicate, err
	}
	err = pc.call(ctx, "relayBatchEnqueue", func(ctx context.Context, fs fedschema.FederationService) error {
		fut, release := fs.RelayBatchEnqueue(ctx, func(p fedschema.FederationService_relayBatchEnqueue_Params) error {
			l, err := p.NewRecipientKeys(int32(len(it.Recipients)))
			if err != nil {
				return err
			}
			for i, r := range it.Recipients {
				if err := l.Set(i, r[:]); err != nil {
					return err
				}
			}
			return set(p)
		})
		defer release()
		res, err := fut.Struct()
		duplicate = err == nil && res.Duplicate()
		return err
	})
	return duplicate, err
}

// relaySetters are the setters relayEnqueue and relayBatchEnqueue share.
type relaySetters interface {
	SetOrigin(string) error
	SetHops(uint8)
	NewRelay() (fedschema.RelayId, error)
	SetSenderKey([]byte) error
	SetPayload([]byte) error
	SetChannelId([]byte) error
}

// cloneData copies a Data result out of its message (released with the
// call); empty becomes nil.
func cloneData(b []byte, err error) ([]byte, error) {
	if err != nil || len(b) == 0 {
		return nil, err
	}
	return bytes.Clone(b), nil
}
