package rpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3/exc"
	"github.com/quic-go/quic-go"

	"github.com/quicproquo/qpq/rpc/errcode"
	"github.com/quicproquo/qpq/rpc/pake"
	"github.com/quicproquo/qpq/schema"
)

// WireVersion is the value of every version field this client sends.
const WireVersion = 1

// ErrDisconnected wraps the error of a call that failed because the
// connection ended; the caller should dial again.
var ErrDisconnected = errors.New("rpc: connection lost")

// Envelope is a queued message with its per-inbox sequence number.
type Envelope struct {
	Seq  uint64
	Data []byte
}

// Client is a typed NodeService client. It works over any NodeService
// capability: a home server reached with Dial, or a peer over another
// transport (NewConn). Failed calls return errors that carry the server's
// errcode (errcode.Of(err)); a lost connection wraps ErrDisconnected.
// A Client is safe for concurrent use.
type Client struct {
	ns schema.NodeService

	mu    sync.Mutex // guards token
	token []byte
}

// NewClient wraps ns. The Client takes over the reference: closing the
// connection that made ns releases it.
func NewClient(ns schema.NodeService) *Client { return &Client{ns: ns} }

// Raw returns the underlying capability, for calls the typed methods do
// not offer (for instance deliberately malformed ones in tests).
func (c *Client) Raw() schema.NodeService { return c.ns }

func (c *Client) release() { c.ns.Release() }

// SetToken sets the session token sent as Auth with every call that needs
// one. Login sets it.
func (c *Client) SetToken(token []byte) {
	c.mu.Lock()
	c.token = bytes.Clone(token)
	c.mu.Unlock()
}

// Token returns the session token in use, or nil.
func (c *Client) Token() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.token)
}

func (c *Client) auth(newAuth func() (schema.Auth, error)) error {
	a, err := newAuth()
	if err != nil {
		return err
	}
	a.SetVersion(WireVersion)
	c.mu.Lock()
	defer c.mu.Unlock()
	return a.SetAccessToken(c.token)
}

// CallError turns the error of a failed call of any capability into one
// that carries the answering side's code (errcode.Of), or wraps
// ErrDisconnected when the connection ended, or ctx's error.
func CallError(ctx context.Context, method string, err error) error {
	return callError(ctx, method, err)
}

// callError turns a failed call's error into one that carries its code.
func callError(ctx context.Context, method string, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("rpc: %s: %w", method, ctx.Err())
	case isDisconnect(err):
		return fmt.Errorf("rpc: %s: %w (%v)", method, ErrDisconnected, err)
	}
	return fmt.Errorf("rpc: %s: %w", method, &errcode.Error{Code: errcode.Of(err), Message: errcode.Message(err)})
}

// isDisconnect reports whether a call failed because its connection or
// stream ended, rather than with an answer from the server.
func isDisconnect(err error) bool {
	var (
		appErr  *quic.ApplicationError
		trErr   *quic.TransportError
		idleErr *quic.IdleTimeoutError
		resetEr *quic.StatelessResetError
		strErr  *quic.StreamError
	)
	return exc.TypeOf(err) == exc.Disconnected ||
		errors.As(err, &appErr) || errors.As(err, &trErr) || errors.As(err, &idleErr) ||
		errors.As(err, &resetEr) || errors.As(err, &strErr) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe)
}

// Health returns the server's status text ("ok").
func (c *Client) Health(ctx context.Context) (string, error) {
	f, release := c.ns.Health(ctx, nil)
	defer release()
	res, err := f.Struct()
	if err != nil {
		return "", callError(ctx, "health", err)
	}
	s, err := res.Status()
	if err != nil {
		return "", callError(ctx, "health", err)
	}
	return s, nil
}

// ServerInfo returns what a home server says about itself (the serverInfo
// extension): its domain and the JSON peer.AddrInfo of its circuit relay
// (nil without one). It needs no login.
func (c *Client) ServerInfo(ctx context.Context) (domain string, p2pAddr []byte, err error) {
	f, release := c.ns.ServerInfo(ctx, nil)
	defer release()
	res, err := f.Struct()
	if err != nil {
		return "", nil, callError(ctx, "serverInfo", err)
	}
	if domain, err = res.Domain(); err != nil {
		return "", nil, callError(ctx, "serverInfo", err)
	}
	if p2pAddr, err = copyData(res.P2pAddr()); err != nil {
		return "", nil, callError(ctx, "serverInfo", err)
	}
	return domain, p2pAddr, nil
}

// UploadKeyPackage stores a single-use MLS KeyPackage of the caller's own
// identity and returns its SHA-256 fingerprint.
func (c *Client) UploadKeyPackage(ctx context.Context, identity, pkg []byte) ([]byte, error) {
	f, release := c.ns.UploadKeyPackage(ctx, func(p schema.NodeService_uploadKeyPackage_Params) error {
		return firstErr(p.SetIdentityKey(identity), p.SetPackage(pkg), c.auth(p.NewAuth))
	})
	defer release()
	res, err := f.Struct()
	if err != nil {
		return nil, callError(ctx, "uploadKeyPackage", err)
	}
	return copyData(res.Fingerprint())
}

// FetchKeyPackage removes and returns identity's oldest key package, or
// nil when it has none.
func (c *Client) FetchKeyPackage(ctx context.Context, identity []byte) ([]byte, error) {
	f, release := c.ns.FetchKeyPackage(ctx, func(p schema.NodeService_fetchKeyPackage_Params) error {
		return firstErr(p.SetIdentityKey(identity), c.auth(p.NewAuth))
	})
	defer release()
	res, err := f.Struct()
	if err != nil {
		return nil, callError(ctx, "fetchKeyPackage", err)
	}
	return copyData(res.Package())
}

// Enqueue leaves payload in recipient's inbox (channel nil = the default
// inbox) and returns its sequence number there, once it is on disk.
func (c *Client) Enqueue(ctx context.Context, recipient, channel, payload []byte) (uint64, error) {
	f, release := c.ns.Enqueue(ctx, func(p schema.NodeService_enqueue_Params) error {
		p.SetVersion(WireVersion)
		return firstErr(p.SetRecipientKey(recipient), p.SetPayload(payload), p.SetChannelId(channel), c.auth(p.NewAuth))
	})
	defer release()
	res, err := f.Struct()
	if err != nil {
		return 0, callError(ctx, "enqueue", err)
	}
	return res.Seq(), nil
}

// BatchEnqueue leaves payload in each recipient's inbox in one transaction
// and returns their sequence numbers in request order.
func (c *Client) BatchEnqueue(ctx context.Context, recipients [][]byte, channel, payload []byte) ([]uint64, error) {
	f, release := c.ns.BatchEnqueue(ctx, func(p schema.NodeService_batchEnqueue_Params) error {
		p.SetVersion(WireVersion)
		l, err := p.NewRecipientKeys(int32(len(recipients)))
		if err != nil {
			return err
		}
		for i, r := range recipients {
			if err := l.Set(i, r); err != nil {
				return err
			}
		}
		return firstErr(p.SetPayload(payload), p.SetChannelId(channel), c.auth(p.NewAuth))
	})
	defer release()
	res, err := f.Struct()
	if err != nil {
		return nil, callError(ctx, "batchEnqueue", err)
	}
	l, err := res.Seqs()
	if err != nil {
		return nil, callError(ctx, "batchEnqueue", err)
	}
	seqs := make([]uint64, l.Len())
	for i := range seqs {
		seqs[i] = l.At(i)
	}
	return seqs, nil
}

// inboxParams are the parameters fetch, fetchWait, peek and peekWait share.
type inboxParams interface {
	SetVersion(uint16)
	SetLimit(uint32)
	SetRecipientKey([]byte) error
	SetChannelId([]byte) error
	NewAuth() (schema.Auth, error)
}

func (c *Client) inbox(p inboxParams, recipient, channel []byte, limit uint32) error {
	p.SetVersion(WireVersion)
	p.SetLimit(limit)
	return firstErr(p.SetRecipientKey(recipient), p.SetChannelId(channel), c.auth(p.NewAuth))
}

// Fetch removes and returns up to limit (0 = all) messages of the caller's
// inbox (recipient = the caller's identity) in seq order. A server may
// return fewer to bound the reply's size; fetch again for the rest.
func (c *Client) Fetch(ctx context.Context, recipient, channel []byte, limit uint32) ([]Envelope, error) {
	f, release := c.ns.Fetch(ctx, func(p schema.NodeService_fetch_Params) error {
		return c.inbox(p, recipient, channel, limit)
	})
	defer release()
	res, err := f.Struct()
	if err != nil {
		return nil, callError(ctx, "fetch", err)
	}
	return envelopes(ctx, "fetch", res.Payloads)
}

// FetchWait is Fetch that, when the inbox is empty, waits up to timeout
// for a message to arrive (the server caps the wait) and returns an empty
// list if none does.
func (c *Client) FetchWait(ctx context.Context, recipient, channel []byte, timeout time.Duration, limit uint32) ([]Envelope, error) {
	f, release := c.ns.FetchWait(ctx, func(p schema.NodeService_fetchWait_Params) error {
		p.SetTimeoutMs(uint64(max(timeout, 0) / time.Millisecond))
		return c.inbox(p, recipient, channel, limit)
	})
	defer release()
	res, err := f.Struct()
	if err != nil {
		return nil, callError(ctx, "fetchWait", err)
	}
	return envelopes(ctx, "fetchWait", res.Payloads)
}

// Peek returns up to limit (0 = all) queued messages without removing
// them; Ack removes them.
func (c *Client) Peek(ctx context.Context, recipient, channel []byte, limit uint32) ([]Envelope, error) {
	f, release := c.ns.Peek(ctx, func(p schema.NodeService_peek_Params) error {
		return c.inbox(p, recipient, channel, limit)
	})
	defer release()
	res, err := f.Struct()
	if err != nil {
		return nil, callError(ctx, "peek", err)
	}
	return envelopes(ctx, "peek", res.Payloads)
}

// PeekWait is Peek that, when the inbox is empty, waits up to timeout for
// a message to arrive (the server caps the wait) and returns an empty list
// if none does. Nothing is removed: Ack what was durably processed, so a
// crash in between loses nothing (a quicproquo extension, ordinal 21).
func (c *Client) PeekWait(ctx context.Context, recipient, channel []byte, timeout time.Duration, limit uint32) ([]Envelope, error) {
	f, release := c.ns.PeekWait(ctx, func(p schema.NodeService_peekWait_Params) error {
		p.SetTimeoutMs(uint64(max(timeout, 0) / time.Millisecond))
		return c.inbox(p, recipient, channel, limit)
	})
	defer release()
	res, err := f.Struct()
	if err != nil {
		return nil, callError(ctx, "peekWait", err)
	}
	return envelopes(ctx, "peekWait", res.Payloads)
}

// Ack removes every queued message with seq <= seqUpTo.
func (c *Client) Ack(ctx context.Context, recipient, channel []byte, seqUpTo uint64) error {
	f, release := c.ns.Ack(ctx, func(p schema.NodeService_ack_Params) error {
		p.SetVersion(WireVersion)
		p.SetSeqUpTo(seqUpTo)
		return firstErr(p.SetRecipientKey(recipient), p.SetChannelId(channel), c.auth(p.NewAuth))
	})
	defer release()
	if _, err := f.Struct(); err != nil {
		return callError(ctx, "ack", err)
	}
	return nil
}

// UploadHybridKey stores the caller's 1216-byte X-Wing public key.
func (c *Client) UploadHybridKey(ctx context.Context, identity, hybridPublicKey []byte) error {
	f, release := c.ns.UploadHybridKey(ctx, func(p schema.NodeService_uploadHybridKey_Params) error {
		return firstErr(p.SetIdentityKey(identity), p.SetHybridPublicKey(hybridPublicKey), c.auth(p.NewAuth))
	})
	defer release()
	if _, err := f.Struct(); err != nil {
		return callError(ctx, "uploadHybridKey", err)
	}
	return nil
}

// FetchHybridKey returns identity's hybrid public key, or nil if none.
func (c *Client) FetchHybridKey(ctx context.Context, identity []byte) ([]byte, error) {
	f, release := c.ns.FetchHybridKey(ctx, func(p schema.NodeService_fetchHybridKey_Params) error {
		return firstErr(p.SetIdentityKey(identity), c.auth(p.NewAuth))
	})
	defer release()
	res, err := f.Struct()
	if err != nil {
		return nil, callError(ctx, "fetchHybridKey", err)
	}
	return copyData(res.HybridPublicKey())
}

// FetchHybridKeys returns the hybrid public keys of identities in request
// order, nil for each identity without one.
func (c *Client) FetchHybridKeys(ctx context.Context, identities [][]byte) ([][]byte, error) {
	f, release := c.ns.FetchHybridKeys(ctx, func(p schema.NodeService_fetchHybridKeys_Params) error {
		l, err := p.NewIdentityKeys(int32(len(identities)))
		if err != nil {
			return err
		}
		for i, id := range identities {
			if err := l.Set(i, id); err != nil {
				return err
			}
		}
		return c.auth(p.NewAuth)
	})
	defer release()
	res, err := f.Struct()
	if err != nil {
		return nil, callError(ctx, "fetchHybridKeys", err)
	}
	l, err := res.Keys()
	if err != nil {
		return nil, callError(ctx, "fetchHybridKeys", err)
	}
	out := make([][]byte, l.Len())
	for i := range out {
		if out[i], err = copyData(l.At(i)); err != nil {
			return nil, callError(ctx, "fetchHybridKeys", err)
		}
	}
	return out, nil
}

// CreateChannel returns the 16-byte id of the 1:1 channel between the
// caller and peer, and whether this call created it (the caller that gets
// true is the MLS initiator).
func (c *Client) CreateChannel(ctx context.Context, peer []byte) (channelID []byte, wasNew bool, err error) {
	f, release := c.ns.CreateChannel(ctx, func(p schema.NodeService_createChannel_Params) error {
		return firstErr(p.SetPeerKey(peer), c.auth(p.NewAuth))
	})
	defer release()
	res, err := f.Struct()
	if err != nil {
		return nil, false, callError(ctx, "createChannel", err)
	}
	id, err := copyData(res.ChannelId())
	if err != nil {
		return nil, false, callError(ctx, "createChannel", err)
	}
	return id, res.WasNew(), nil
}

// ResolveUser returns the identity key registered under username, or nil.
func (c *Client) ResolveUser(ctx context.Context, username string) ([]byte, error) {
	f, release := c.ns.ResolveUser(ctx, func(p schema.NodeService_resolveUser_Params) error {
		return firstErr(p.SetUsername(username), c.auth(p.NewAuth))
	})
	defer release()
	res, err := f.Struct()
	if err != nil {
		return nil, callError(ctx, "resolveUser", err)
	}
	return copyData(res.IdentityKey())
}

// ResolveIdentity returns the username registered with identity, or "".
func (c *Client) ResolveIdentity(ctx context.Context, identity []byte) (string, error) {
	f, release := c.ns.ResolveIdentity(ctx, func(p schema.NodeService_resolveIdentity_Params) error {
		return firstErr(p.SetIdentityKey(identity), c.auth(p.NewAuth))
	})
	defer release()
	res, err := f.Struct()
	if err != nil {
		return "", callError(ctx, "resolveIdentity", err)
	}
	name, err := res.Username()
	if err != nil {
		return "", callError(ctx, "resolveIdentity", err)
	}
	return name, nil
}

// PublishEndpoint publishes the caller's P2P address (JSON of a libp2p
// peer.AddrInfo whose ID is the caller's identity).
func (c *Client) PublishEndpoint(ctx context.Context, identity, nodeAddr []byte) error {
	f, release := c.ns.PublishEndpoint(ctx, func(p schema.NodeService_publishEndpoint_Params) error {
		return firstErr(p.SetIdentityKey(identity), p.SetNodeAddr(nodeAddr), c.auth(p.NewAuth))
	})
	defer release()
	if _, err := f.Struct(); err != nil {
		return callError(ctx, "publishEndpoint", err)
	}
	return nil
}

// ResolveEndpoint returns identity's published P2P address, or nil.
func (c *Client) ResolveEndpoint(ctx context.Context, identity []byte) ([]byte, error) {
	f, release := c.ns.ResolveEndpoint(ctx, func(p schema.NodeService_resolveEndpoint_Params) error {
		return firstErr(p.SetIdentityKey(identity), c.auth(p.NewAuth))
	})
	defer release()
	res, err := f.Struct()
	if err != nil {
		return nil, callError(ctx, "resolveEndpoint", err)
	}
	return copyData(res.NodeAddr())
}

// Register creates the account username bound to identity with an OPAQUE
// registration; the password never leaves this process. A taken username
// fails with errcode.AlreadyExists.
func (c *Client) Register(ctx context.Context, username string, password, identity []byte) error {
	reg, req, err := pake.StartRegistration(password)
	if err != nil {
		return err
	}
	resp, err := c.OpaqueRegisterStart(ctx, username, req)
	if err != nil {
		return err
	}
	upload, err := reg.Finish(resp)
	if err != nil {
		return err
	}
	return c.OpaqueRegisterFinish(ctx, username, upload, identity)
}

// Login runs an OPAQUE login for username and identity, sets the session
// token on c and returns it. A wrong password or unknown user fails with
// errcode.Unauthenticated (the two are indistinguishable by design).
func (c *Client) Login(ctx context.Context, username string, password, identity []byte) ([]byte, error) {
	login, ke1, err := pake.StartLogin(password)
	if err != nil {
		return nil, err
	}
	ke2, err := c.OpaqueLoginStart(ctx, username, ke1)
	if err != nil {
		return nil, err
	}
	ke3, err := login.Finish(ke2)
	if errors.Is(err, pake.ErrWrongPassword) {
		// The server counts the unfinished attempt as a failure.
		return nil, fmt.Errorf("rpc: login: %w", errcode.New(errcode.Unauthenticated, "wrong username or password"))
	}
	if err != nil {
		return nil, err
	}
	token, err := c.OpaqueLoginFinish(ctx, username, ke3, identity)
	if err != nil {
		return nil, err
	}
	c.SetToken(token)
	return token, nil
}

// OpaqueRegisterStart sends a RegistrationRequest and returns the
// server's RegistrationResponse. Register runs the whole exchange.
func (c *Client) OpaqueRegisterStart(ctx context.Context, username string, request []byte) ([]byte, error) {
	f, release := c.ns.OpaqueRegisterStart(ctx, func(p schema.NodeService_opaqueRegisterStart_Params) error {
		return firstErr(p.SetUsername(username), p.SetRequest(request))
	})
	defer release()
	res, err := f.Struct()
	if err != nil {
		return nil, callError(ctx, "opaqueRegisterStart", err)
	}
	return copyData(res.Response())
}

// OpaqueRegisterFinish uploads the RegistrationRecord and binds username
// to identity.
func (c *Client) OpaqueRegisterFinish(ctx context.Context, username string, upload, identity []byte) error {
	f, release := c.ns.OpaqueRegisterFinish(ctx, func(p schema.NodeService_opaqueRegisterFinish_Params) error {
		return firstErr(p.SetUsername(username), p.SetUpload(upload), p.SetIdentityKey(identity))
	})
	defer release()
	res, err := f.Struct()
	if err != nil {
		return callError(ctx, "opaqueRegisterFinish", err)
	}
	if !res.Success() {
		return fmt.Errorf("rpc: opaqueRegisterFinish: %w", errcode.New(errcode.Internal, "server reported no success"))
	}
	return nil
}

// OpaqueLoginStart sends KE1 and returns the server's KE2.
func (c *Client) OpaqueLoginStart(ctx context.Context, username string, ke1 []byte) ([]byte, error) {
	f, release := c.ns.OpaqueLoginStart(ctx, func(p schema.NodeService_opaqueLoginStart_Params) error {
		return firstErr(p.SetUsername(username), p.SetRequest(ke1))
	})
	defer release()
	res, err := f.Struct()
	if err != nil {
		return nil, callError(ctx, "opaqueLoginStart", err)
	}
	return copyData(res.Response())
}

// OpaqueLoginFinish sends KE3 and returns the session token.
func (c *Client) OpaqueLoginFinish(ctx context.Context, username string, ke3, identity []byte) ([]byte, error) {
	f, release := c.ns.OpaqueLoginFinish(ctx, func(p schema.NodeService_opaqueLoginFinish_Params) error {
		return firstErr(p.SetUsername(username), p.SetFinalization(ke3), p.SetIdentityKey(identity))
	})
	defer release()
	res, err := f.Struct()
	if err != nil {
		return nil, callError(ctx, "opaqueLoginFinish", err)
	}
	return copyData(res.SessionToken())
}

func envelopes(ctx context.Context, method string, list func() (schema.Envelope_List, error)) ([]Envelope, error) {
	l, err := list()
	if err != nil {
		return nil, callError(ctx, method, err)
	}
	out := make([]Envelope, l.Len())
	for i := range out {
		e := l.At(i)
		data, err := copyData(e.Data())
		if err != nil {
			return nil, callError(ctx, method, err)
		}
		out[i] = Envelope{Seq: e.Seq(), Data: data}
	}
	return out, nil
}

// copyData copies a Data field out of a result message, which is released
// when the call's release function runs. Empty Data becomes nil.
func copyData(b []byte, err error) ([]byte, error) {
	if err != nil || len(b) == 0 {
		return nil, err
	}
	return bytes.Clone(b), nil
}

func firstErr(errs ...error) error { return errors.Join(errs...) }
