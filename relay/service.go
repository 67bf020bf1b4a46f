package relay

import (
	"context"
	"crypto/hpke"
	"crypto/sha256"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quicproquo/qpq/relay/auth"
	"github.com/quicproquo/qpq/relay/store"
	"github.com/quicproquo/qpq/relay/wire"
	"github.com/quicproquo/qpq/rpc/errcode"
	"github.com/quicproquo/qpq/schema"
)

// Caller is the authenticated party of a call.
type Caller struct {
	Identity store.Key
	// Session names the caller's credential for per-session rate limits
	// (a token's selector); empty means no per-session limit.
	Session string
}

// Authenticator turns a call's auth field into its caller. It is called
// once per call, from many goroutines at once; errors should carry an
// errcode (unauthenticated, invalid-argument).
type Authenticator interface {
	Authenticate(ctx context.Context, a schema.Auth) (Caller, error)
}

// TokenAuthenticator returns an Authenticator of clients for one
// connection: Auth{version=1, accessToken=<session token from
// opaqueLoginFinish>}. It remembers the token it last accepted
// (auth.SessionCache), so use one per connection.
func (r *Relay) TokenAuthenticator() Authenticator { return tokenAuth{r.accounts.NewSessionCache()} }

type tokenAuth struct{ acc *auth.SessionCache }

var _ Authenticator = tokenAuth{}

func (t tokenAuth) Authenticate(_ context.Context, a schema.Auth) (Caller, error) {
	if !a.IsValid() {
		return Caller{}, errcode.New(errcode.Unauthenticated, "missing auth; log in first")
	}
	if a.Version() != 1 {
		return Caller{}, errcode.Errorf(errcode.InvalidArgument, "auth version %d; must be 1", a.Version())
	}
	tok, err := a.AccessToken()
	if err != nil {
		return Caller{}, errcode.New(errcode.InvalidArgument, "unreadable access token")
	}
	s, err := t.acc.Authenticate(tok)
	if err != nil {
		return Caller{}, err
	}
	return Caller{Identity: s.Identity, Session: s.ID}, nil
}

// ServiceOptions describe one connection to a Service.
type ServiceOptions struct {
	// Auth names the caller of each call. Required.
	Auth Authenticator
	// Addr is the peer's address, for per-address rate limits (none when
	// unset).
	Addr netip.Addr
	// Accounts offers the opaque* methods (registration and login). Off,
	// they fail with failed-precondition (a node over the P2P link).
	Accounts bool
}

// Service answers NodeService for one connection.
type Service struct {
	r       *Relay
	opts    ServiceOptions
	addrKey string
	waits   atomic.Int32

	mu     sync.Mutex                    // guards logins
	logins map[string]*auth.PendingLogin // by username; this connection's logins in progress
}

var _ schema.NodeService_Server = (*Service)(nil)

// NewService returns the NodeService implementation for one connection.
// Serve it with rpc.ServeStream (or Relay.Serve, which does).
func (r *Relay) NewService(opts ServiceOptions) *Service {
	r.m.connections.Inc()
	return &Service{r: r, opts: opts, addrKey: rateKey(opts.Addr), logins: make(map[string]*auth.PendingLogin)}
}

// Shutdown is called by the RPC system when the connection is gone; logins
// left unfinished count as failed.
func (s *Service) Shutdown() {
	s.mu.Lock()
	for name, p := range s.logins {
		p.Abandon()
		s.r.m.logins.WithLabelValues("abandoned").Inc()
		delete(s.logins, name)
	}
	s.mu.Unlock()
	s.r.m.connections.Dec()
}

// done records a call's outcome and logs failures that are ours.
func (s *Service) done(method string, err error) error {
	code := "ok"
	if err != nil {
		c := errcode.Of(err)
		code = string(c)
		if c == errcode.Internal || errcode.Local(err) {
			s.r.cfg.Logger.Error("call failed", "method", method, "err", err)
		}
	}
	s.r.m.calls.WithLabelValues(method, code).Inc()
	return err
}

var errCancelled = errcode.New(errcode.FailedPrecondition, "call cancelled by the caller")

var (
	errAddrRate  = errcode.New(errcode.ResourceExhausted, "too many requests from this address; slow down")
	errTokenRate = errcode.New(errcode.ResourceExhausted, "too many requests with this token; slow down")
)

// admit applies the per-address rate limit.
func (s *Service) admit() error {
	if s.addrKey != "" && !s.r.perAddr.Allow(s.addrKey) {
		s.r.m.rateLimited.WithLabelValues("address").Inc()
		return errAddrRate
	}
	return nil
}

// caller admits and authenticates a call that needs a caller.
func (s *Service) caller(ctx context.Context, field func() (schema.Auth, error)) (Caller, error) {
	if err := s.admit(); err != nil {
		return Caller{}, err
	}
	a, err := field()
	if err != nil {
		return Caller{}, errcode.New(errcode.InvalidArgument, "unreadable auth")
	}
	c, err := s.opts.Auth.Authenticate(ctx, a)
	if err != nil {
		return Caller{}, err
	}
	if c.Session != "" && !s.r.perToken.Allow(c.Session) {
		s.r.m.rateLimited.WithLabelValues("token").Inc()
		return Caller{}, errTokenRate
	}
	return c, nil
}

// keyCall admits and authenticates a call and reads its identityKey
// argument, which must be the caller's own when own is set.
func (s *Service) keyCall(ctx context.Context, auth func() (schema.Auth, error), identityKey func() ([]byte, error), own bool) (Caller, store.Key, error) {
	c, err := s.caller(ctx, auth)
	if err != nil {
		return Caller{}, store.Key{}, err
	}
	read := keyArg
	if own {
		read = func(field string, get func() ([]byte, error)) (store.Key, error) { return ownKey(c, field, get) }
	}
	id, err := read("identityKey", identityKey)
	return c, id, err
}

// UploadKeyPackage stores a key package of the caller's own identity: in
// its queue, or as its last-resort package (see keypackage.go).
func (s *Service) UploadKeyPackage(ctx context.Context, call schema.NodeService_uploadKeyPackage) error {
	return s.done("uploadKeyPackage", func() error {
		p := call.Args()
		_, id, err := s.keyCall(ctx, p.Auth, p.IdentityKey, true)
		if err != nil {
			return err
		}
		pkg, err := p.Package()
		if err != nil {
			return unreadable("package")
		}
		switch {
		case len(pkg) == 0:
			return errcode.New(errcode.InvalidArgument, "package is empty")
		case len(pkg) > s.r.cfg.Limits.MaxKeyPackage:
			return errcode.Errorf(errcode.ResourceExhausted, "package of %d bytes is above the limit of %d", len(pkg), s.r.cfg.Limits.MaxKeyPackage)
		}
		last, err := isLastResort(id, pkg)
		if err != nil {
			return err
		}
		put := s.r.st.PutKeyPackage
		if last {
			put = s.r.st.PutLastResortKeyPackage
		}
		switch err := put(id, pkg); {
		case errors.Is(err, store.ErrTooManyKeyPackages):
			return errcode.Errorf(errcode.ResourceExhausted, "%d key packages already stored for this identity", s.r.cfg.Limits.MaxKeyPackages)
		case err != nil:
			return errcode.Storage(err)
		}
		fp := sha256.Sum256(pkg)
		res, err := call.AllocResults()
		if err != nil {
			return err
		}
		return res.SetFingerprint(fp[:])
	}())
}

// FetchKeyPackage pops the oldest key package of an identity, or returns
// its last-resort one when none is left.
func (s *Service) FetchKeyPackage(ctx context.Context, call schema.NodeService_fetchKeyPackage) error {
	return s.done("fetchKeyPackage", func() error {
		p := call.Args()
		_, id, err := s.keyCall(ctx, p.Auth, p.IdentityKey, false)
		if err != nil {
			return err
		}
		pkg, err := s.r.fetchKeyPackage(ctx, id)
		if err != nil {
			return err
		}
		res, err := call.AllocResults()
		if err != nil {
			return err
		}
		return res.SetPackage(pkg)
	}())
}

// Enqueue leaves a payload in one inbox.
func (s *Service) Enqueue(ctx context.Context, call schema.NodeService_enqueue) error {
	return s.done("enqueue", func() error {
		p := call.Args()
		c, err := s.caller(ctx, p.Auth)
		if err != nil {
			return err
		}
		if err := versionArg(p.Version()); err != nil {
			return err
		}
		to, err := keyArg("recipientKey", p.RecipientKey)
		if err != nil {
			return err
		}
		seqs, err := s.enqueue(c, []store.Key{to}, p.ChannelId, p.Payload, call.Go)
		if err != nil {
			return err
		}
		res, err := call.AllocResults()
		if err != nil {
			return err
		}
		res.SetSeq(seqs[0])
		return nil
	}())
}

// BatchEnqueue leaves one payload in many inboxes in one transaction.
func (s *Service) BatchEnqueue(ctx context.Context, call schema.NodeService_batchEnqueue) error {
	return s.done("batchEnqueue", func() error {
		p := call.Args()
		c, err := s.caller(ctx, p.Auth)
		if err != nil {
			return err
		}
		if err := versionArg(p.Version()); err != nil {
			return err
		}
		to, err := wire.Recipients(p.RecipientKeys, s.r.cfg.Limits.MaxBatchRecipients)
		if err != nil {
			return err
		}
		seqs, err := s.enqueue(c, to, p.ChannelId, p.Payload, call.Go)
		if err != nil {
			return err
		}
		res, err := call.AllocResults()
		if err != nil {
			return err
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

// enqueue delivers a payload from the caller. The write is queued for
// the next group commit before goAside lets the connection's next call
// start, and the reply waits aside for the commit: calls pipelined on one
// connection share commits, and their seqs keep the calls' order.
func (s *Service) enqueue(c Caller, to []store.Key, channelField, payloadField func() ([]byte, error), goAside func()) ([]uint64, error) {
	ch, err := channelArg(channelField)
	if err != nil {
		return nil, err
	}
	payload, err := wire.Payload(payloadField, s.r.cfg.Limits.MaxPayload)
	if err != nil {
		return nil, err
	}
	local, relays, place, err := s.r.split(to, 1, "")
	if err != nil {
		return nil, err
	}
	wait := s.r.st.SubmitDelivery(store.Delivery{From: c.Identity, Channel: ch, Payload: payload, Local: local, Relays: relays})
	goAside()
	d, err := wait()
	if err != nil {
		return nil, s.r.deliveryErr(err)
	}
	s.r.m.enqueued.Add(float64(len(d.Local)))
	return seqsInOrder(d, place), nil
}

// inboxArgs are the fields that name the caller's own inbox.
type inboxArgs struct {
	auth      func() (schema.Auth, error)
	version   uint16
	recipient func() ([]byte, error)
	channel   func() ([]byte, error)
}

// ownInbox admits a call on the caller's own inbox: its recipient must be
// the caller, and a channel must exist and include the caller.
func (s *Service) ownInbox(ctx context.Context, a inboxArgs) (store.Inbox, error) {
	c, err := s.caller(ctx, a.auth)
	if err != nil {
		return store.Inbox{}, err
	}
	if err := versionArg(a.version); err != nil {
		return store.Inbox{}, err
	}
	rk, err := ownKey(c, "recipientKey", a.recipient)
	if err != nil {
		return store.Inbox{}, err
	}
	ch, err := channelArg(a.channel)
	if err != nil {
		return store.Inbox{}, err
	}
	if !ch.IsZero() {
		chRec, ok, err := s.r.st.Channel(ch)
		switch {
		case err != nil:
			return store.Inbox{}, errcode.Storage(err)
		case !ok:
			return store.Inbox{}, errcode.New(errcode.NotFound, "no such channel")
		case !chRec.Has(rk):
			return store.Inbox{}, errcode.New(errcode.PermissionDenied, "the caller is not a member of this channel")
		}
	}
	return store.Inbox{Recipient: rk, Channel: ch}, nil
}

func (s *Service) drain(in store.Inbox, limit uint32) ([]store.Envelope, error) {
	envs, err := s.r.st.Fetch(in, int(limit), s.r.cfg.Limits.MaxFetchBytes)
	if err != nil {
		return nil, errcode.Storage(err)
	}
	s.r.m.fetched.Add(float64(len(envs)))
	return envs, nil
}

func (s *Service) peek(in store.Inbox, limit uint32) ([]store.Envelope, error) {
	envs, err := s.r.st.Peek(in, int(limit), s.r.cfg.Limits.MaxFetchBytes)
	if err != nil {
		return nil, errcode.Storage(err)
	}
	return envs, nil
}

// Fetch drains the caller's inbox.
func (s *Service) Fetch(ctx context.Context, call schema.NodeService_fetch) error {
	p := call.Args()
	return s.done("fetch", takeNow(ctx, s, inboxArgs{p.Auth, p.Version(), p.RecipientKey, p.ChannelId},
		p.Limit(), s.drain, func() (schema.NodeService_fetch_Results, error) { return call.AllocResults() }))
}

// FetchWait drains the caller's inbox, waiting for a message if it is
// empty.
func (s *Service) FetchWait(ctx context.Context, call schema.NodeService_fetchWait) error {
	// Wait aside: the connection's next calls must not queue behind us.
	call.Go()
	p := call.Args()
	return s.done("fetchWait", longPoll(ctx, s, inboxArgs{p.Auth, p.Version(), p.RecipientKey, p.ChannelId},
		p.TimeoutMs(), p.Limit(), s.drain, func() (schema.NodeService_fetchWait_Results, error) { return call.AllocResults() }))
}

// PeekWait is peek that, when the inbox is empty, waits like fetchWait;
// nothing is removed (ack does that), so a client that crashes before it
// stored what it read loses nothing.
func (s *Service) PeekWait(ctx context.Context, call schema.NodeService_peekWait) error {
	call.Go()
	p := call.Args()
	return s.done("peekWait", longPoll(ctx, s, inboxArgs{p.Auth, p.Version(), p.RecipientKey, p.ChannelId},
		p.TimeoutMs(), p.Limit(), s.peek, func() (schema.NodeService_peekWait_Results, error) { return call.AllocResults() }))
}

// envelopeResults are the results of every call that returns payloads.
type envelopeResults interface {
	NewPayloads(int32) (schema.Envelope_List, error)
}

// takeNow runs fetch or peek: take (drain or peek) what waits, at once.
func takeNow[R envelopeResults](ctx context.Context, s *Service, a inboxArgs, limit uint32,
	take func(store.Inbox, uint32) ([]store.Envelope, error), alloc func() (R, error)) error {
	in, err := s.ownInbox(ctx, a)
	if err != nil {
		return err
	}
	envs, err := take(in, limit)
	return reply(alloc, envs, err)
}

// reply answers a call that returns payloads with envs, unless err.
func reply[R envelopeResults](alloc func() (R, error), envs []store.Envelope, err error) error {
	if err != nil {
		return err
	}
	res, err := alloc()
	if err != nil {
		return err
	}
	return setEnvelopes(res.NewPayloads, envs)
}

// longPoll runs fetchWait or peekWait: take (drain or peek) at once, else
// when a message arrives, else nothing after the capped timeout.
func longPoll[R envelopeResults](ctx context.Context, s *Service, a inboxArgs, timeoutMs uint64, limit uint32,
	take func(store.Inbox, uint32) ([]store.Envelope, error), alloc func() (R, error)) error {
	in, err := s.ownInbox(ctx, a)
	if err != nil {
		return err
	}
	if n := s.waits.Add(1); n > int32(s.r.cfg.Limits.MaxWaitsPerConn) {
		s.waits.Add(-1)
		return errcode.Errorf(errcode.ResourceExhausted, "more than %d waiting calls (fetchWait, peekWait) at once on this connection", s.r.cfg.Limits.MaxWaitsPerConn)
	}
	defer s.waits.Add(-1)
	timeout := time.Duration(min(timeoutMs, uint64(s.r.cfg.MaxFetchWait/time.Millisecond))) * time.Millisecond
	envs, err := s.wait(ctx, in, limit, timeout, take)
	return reply(alloc, envs, err)
}

func (s *Service) wait(ctx context.Context, in store.Inbox, limit uint32, timeout time.Duration, take func(store.Inbox, uint32) ([]store.Envelope, error)) ([]store.Envelope, error) {
	// Subscribe before the first look, so an enqueue between the look and
	// the wait still wakes us.
	wake, stop := s.r.st.Wait(in)
	defer stop()
	s.r.m.waiters.Inc()
	defer s.r.m.waiters.Dec()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		envs, err := take(in, limit)
		if err != nil || len(envs) > 0 {
			return envs, err
		}
		select {
		case <-wake:
			// Another fetch may have drained it first: look again.
		case <-timer.C:
			return nil, nil
		case <-ctx.Done():
			return nil, errCancelled // the caller hung up or cancelled
		}
	}
}

// Peek returns the caller's queued messages without removing them.
func (s *Service) Peek(ctx context.Context, call schema.NodeService_peek) error {
	p := call.Args()
	return s.done("peek", takeNow(ctx, s, inboxArgs{p.Auth, p.Version(), p.RecipientKey, p.ChannelId},
		p.Limit(), s.peek, func() (schema.NodeService_peek_Results, error) { return call.AllocResults() }))
}

// Ack removes the caller's messages up to a seq.
func (s *Service) Ack(ctx context.Context, call schema.NodeService_ack) error {
	return s.done("ack", func() error {
		p := call.Args()
		in, err := s.ownInbox(ctx, inboxArgs{p.Auth, p.Version(), p.RecipientKey, p.ChannelId})
		if err != nil {
			return err
		}
		if _, err := s.r.st.Ack(in, p.SeqUpTo()); err != nil {
			return errcode.Storage(err)
		}
		return nil
	}())
}

// Health answers "ok".
func (s *Service) Health(_ context.Context, call schema.NodeService_health) error {
	return s.done("health", func() error {
		if err := s.admit(); err != nil {
			return err
		}
		res, err := call.AllocResults()
		if err != nil {
			return err
		}
		return res.SetStatus("ok")
	}())
}

// ServerInfo answers what clients need to know about this server: its
// domain and its circuit relay's address. Like health it needs no auth:
// both are announced by mDNS and printed by qpq serve anyway.
func (s *Service) ServerInfo(_ context.Context, call schema.NodeService_serverInfo) error {
	return s.done("serverInfo", func() error {
		if err := s.admit(); err != nil {
			return err
		}
		res, err := call.AllocResults()
		if err != nil {
			return err
		}
		if err := res.SetDomain(s.r.cfg.Domain); err != nil {
			return err
		}
		if s.r.cfg.P2PAddr == nil {
			return nil
		}
		return res.SetP2pAddr(s.r.cfg.P2PAddr())
	}())
}

// UploadHybridKey stores the caller's X-Wing public key.
func (s *Service) UploadHybridKey(ctx context.Context, call schema.NodeService_uploadHybridKey) error {
	return s.done("uploadHybridKey", func() error {
		p := call.Args()
		_, id, err := s.keyCall(ctx, p.Auth, p.IdentityKey, true)
		if err != nil {
			return err
		}
		pub, err := p.HybridPublicKey()
		if err != nil {
			return unreadable("hybridPublicKey")
		}
		if err := CheckHybridKey(pub); err != nil {
			return err
		}
		if err := s.r.st.PutHybridKey(id, pub); err != nil {
			return errcode.Storage(err)
		}
		return nil
	}())
}

// CheckHybridKey validates an X-Wing (MLKEM768X25519) HPKE public key.
func CheckHybridKey(pub []byte) error {
	if len(pub) != HybridKeySize {
		return errcode.Errorf(errcode.InvalidArgument, "hybridPublicKey is %d bytes; an X-Wing public key is %d", len(pub), HybridKeySize)
	}
	if _, err := hpke.MLKEM768X25519().NewPublicKey(pub); err != nil {
		return errcode.Errorf(errcode.InvalidArgument, "hybridPublicKey is not an X-Wing public key: %v", err)
	}
	return nil
}

// FetchHybridKey returns one identity's hybrid key.
func (s *Service) FetchHybridKey(ctx context.Context, call schema.NodeService_fetchHybridKey) error {
	return s.done("fetchHybridKey", func() error {
		p := call.Args()
		_, id, err := s.keyCall(ctx, p.Auth, p.IdentityKey, false)
		if err != nil {
			return err
		}
		keys, err := s.r.hybridKeys(ctx, id)
		if err != nil {
			return err
		}
		res, err := call.AllocResults()
		if err != nil {
			return err
		}
		return res.SetHybridPublicKey(keys[0])
	}())
}

// FetchHybridKeys returns many identities' hybrid keys in request order.
func (s *Service) FetchHybridKeys(ctx context.Context, call schema.NodeService_fetchHybridKeys) error {
	return s.done("fetchHybridKeys", func() error {
		p := call.Args()
		if _, err := s.caller(ctx, p.Auth); err != nil {
			return err
		}
		list, err := p.IdentityKeys()
		if err != nil {
			return unreadable("identityKeys")
		}
		if list.Len() > s.r.cfg.Limits.MaxHybridKeys {
			return errcode.Errorf(errcode.ResourceExhausted, "%d identities is above the limit of %d", list.Len(), s.r.cfg.Limits.MaxHybridKeys)
		}
		ids := make([]store.Key, list.Len())
		for i := range ids {
			if ids[i], err = keyArg("identityKeys[i]", func() ([]byte, error) { return list.At(i) }); err != nil {
				return err
			}
		}
		keys, err := s.r.hybridKeys(ctx, ids...)
		if err != nil {
			return err
		}
		res, err := call.AllocResults()
		if err != nil {
			return err
		}
		out, err := res.NewKeys(int32(len(keys)))
		if err != nil {
			return err
		}
		for i, k := range keys {
			if err := out.Set(i, k); err != nil {
				return err
			}
		}
		return nil
	}())
}

var errNoAccounts = errcode.New(errcode.FailedPrecondition, "accounts are not offered on this transport")

// accountArgs admits an opaque* call and reads its username and its OPAQUE
// message field.
func (s *Service) accountArgs(username func() (string, error), field string, msg func() ([]byte, error)) (string, []byte, error) {
	if !s.opts.Accounts {
		return "", nil, errNoAccounts
	}
	if err := s.admit(); err != nil {
		return "", nil, err
	}
	name, err := username()
	if err != nil {
		return "", nil, unreadable("username")
	}
	b, err := msg()
	if err != nil {
		return "", nil, unreadable(field)
	}
	return name, b, nil
}

// OpaqueRegisterStart answers an OPAQUE registration request.
func (s *Service) OpaqueRegisterStart(_ context.Context, call schema.NodeService_opaqueRegisterStart) error {
	return s.done("opaqueRegisterStart", func() error {
		p := call.Args()
		name, req, err := s.accountArgs(p.Username, "request", p.Request)
		if err != nil {
			return err
		}
		resp, err := s.r.accounts.RegisterStart(name, s.addrKey, req)
		if err != nil {
			return err
		}
		res, err := call.AllocResults()
		if err != nil {
			return err
		}
		return res.SetResponse(resp)
	}())
}

// OpaqueRegisterFinish stores a registration record bound to an identity.
func (s *Service) OpaqueRegisterFinish(_ context.Context, call schema.NodeService_opaqueRegisterFinish) error {
	return s.done("opaqueRegisterFinish", func() error {
		p := call.Args()
		name, upload, err := s.accountArgs(p.Username, "upload", p.Upload)
		if err != nil {
			return err
		}
		id, err := keyArg("identityKey", p.IdentityKey)
		if err != nil {
			return err
		}
		if err := s.r.accounts.RegisterFinish(name, upload, id); err != nil {
			return err
		}
		s.r.cfg.Logger.Info("user registered", "user", name)
		res, err := call.AllocResults()
		if err != nil {
			return err
		}
		res.SetSuccess(true)
		return nil
	}())
}

// OpaqueLoginStart answers KE1 and keeps the login's state on this
// connection until its finish.
func (s *Service) OpaqueLoginStart(_ context.Context, call schema.NodeService_opaqueLoginStart) error {
	return s.done("opaqueLoginStart", func() error {
		p := call.Args()
		name, ke1, err := s.accountArgs(p.Username, "request", p.Request)
		if err != nil {
			return err
		}
		if err := s.makeRoomForLogin(name); err != nil {
			return err
		}
		pending, ke2, err := s.r.accounts.LoginStart(name, s.addrKey, ke1)
		if err != nil {
			if errcode.Of(err) == errcode.ResourceExhausted {
				s.r.m.rateLimited.WithLabelValues("login").Inc()
			}
			return err
		}
		s.mu.Lock()
		s.logins[name] = pending
		s.mu.Unlock()
		res, err := call.AllocResults()
		if err != nil {
			return err
		}
		return res.SetResponse(ke2)
	}())
}

// makeRoomForLogin abandons this connection's earlier login for name and
// expired ones, and refuses when too many remain.
func (s *Service) makeRoomForLogin(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for n, p := range s.logins {
		if n == name || p.Expired() {
			p.Abandon()
			s.r.m.logins.WithLabelValues("abandoned").Inc()
			delete(s.logins, n)
		}
	}
	if len(s.logins) >= s.r.cfg.Limits.MaxLoginsPerConn {
		return errcode.Errorf(errcode.ResourceExhausted, "more than %d logins in progress on this connection", s.r.cfg.Limits.MaxLoginsPerConn)
	}
	return nil
}

// OpaqueLoginFinish checks KE3 and returns a session token.
func (s *Service) OpaqueLoginFinish(_ context.Context, call schema.NodeService_opaqueLoginFinish) error {
	return s.done("opaqueLoginFinish", func() error {
		p := call.Args()
		name, ke3, err := s.accountArgs(p.Username, "finalization", p.Finalization)
		if err != nil {
			return err
		}
		id, err := keyArg("identityKey", p.IdentityKey)
		if err != nil {
			return err
		}
		s.mu.Lock()
		pending := s.logins[name]
		delete(s.logins, name)
		s.mu.Unlock()
		if pending == nil {
			return errcode.New(errcode.FailedPrecondition, "no login in progress for this username on this connection; call opaqueLoginStart first")
		}
		token, err := pending.Finish(ke3, id)
		switch errcode.Of(err) {
		case "":
			s.r.m.logins.WithLabelValues("ok").Inc()
		case errcode.PermissionDenied:
			s.r.m.logins.WithLabelValues("denied").Inc()
		default:
			s.r.m.logins.WithLabelValues("failed").Inc()
		}
		if err != nil {
			return err
		}
		res, err := call.AllocResults()
		if err != nil {
			return err
		}
		return res.SetSessionToken(token)
	}())
}

// PublishEndpoint stores the caller's P2P address with the time.
func (s *Service) PublishEndpoint(ctx context.Context, call schema.NodeService_publishEndpoint) error {
	return s.done("publishEndpoint", func() error {
		p := call.Args()
		_, id, err := s.keyCall(ctx, p.Auth, p.IdentityKey, true)
		if err != nil {
			return err
		}
		addr, err := p.NodeAddr()
		if err != nil {
			return unreadable("nodeAddr")
		}
		if len(addr) > s.r.cfg.Limits.MaxEndpoint {
			return errcode.Errorf(errcode.ResourceExhausted, "nodeAddr of %d bytes is above the limit of %d", len(addr), s.r.cfg.Limits.MaxEndpoint)
		}
		if err := CheckEndpoint(id, addr); err != nil {
			return err
		}
		if err := s.r.st.PutEndpoint(id, store.Endpoint{Published: s.r.cfg.Now(), NodeAddr: addr}); err != nil {
			return errcode.Storage(err)
		}
		return nil
	}())
}

// ResolveEndpoint returns an identity's published P2P address, if recent.
func (s *Service) ResolveEndpoint(ctx context.Context, call schema.NodeService_resolveEndpoint) error {
	return s.done("resolveEndpoint", func() error {
		p := call.Args()
		_, id, err := s.keyCall(ctx, p.Auth, p.IdentityKey, false)
		if err != nil {
			return err
		}
		e, ok, err := s.r.st.Endpoint(id)
		if err != nil {
			return errcode.Storage(err)
		}
		res, err := call.AllocResults()
		if err != nil {
			return err
		}
		if !ok || s.r.cfg.Now().Sub(e.Published) >= s.r.cfg.EndpointMaxAge {
			return nil // empty Data: none, or too old to trust
		}
		return res.SetNodeAddr(e.NodeAddr)
	}())
}

// CreateChannel returns the 1:1 channel of the caller and a peer.
func (s *Service) CreateChannel(ctx context.Context, call schema.NodeService_createChannel) error {
	return s.done("createChannel", func() error {
		p := call.Args()
		c, err := s.caller(ctx, p.Auth)
		if err != nil {
			return err
		}
		peer, err := keyArg("peerKey", p.PeerKey)
		if err != nil {
			return err
		}
		if peer == c.Identity {
			return errcode.New(errcode.InvalidArgument, "peerKey is the caller's own identity")
		}
		id, created, err := s.r.createChannel(ctx, c.Identity, peer)
		if err != nil {
			return err
		}
		res, err := call.AllocResults()
		if err != nil {
			return err
		}
		res.SetWasNew(created)
		return res.SetChannelId(id[:])
	}())
}

// ResolveUser returns the identity key registered under a username.
func (s *Service) ResolveUser(ctx context.Context, call schema.NodeService_resolveUser) error {
	// Aside: a name@domain is asked of that domain's server, which must
	// not hold up the connection's next calls.
	call.Go()
	return s.done("resolveUser", func() error {
		p := call.Args()
		if _, err := s.caller(ctx, p.Auth); err != nil {
			return err
		}
		name, err := p.Username()
		if err != nil {
			return unreadable("username")
		}
		key, err := s.r.resolveUser(ctx, name)
		if err != nil {
			return err
		}
		res, err := call.AllocResults()
		if err != nil || key == nil {
			return err
		}
		return res.SetIdentityKey(key)
	}())
}

// ResolveIdentity returns the username registered with an identity key.
func (s *Service) ResolveIdentity(ctx context.Context, call schema.NodeService_resolveIdentity) error {
	call.Go() // may ask another domain's server, like resolveUser
	return s.done("resolveIdentity", func() error {
		p := call.Args()
		_, id, err := s.keyCall(ctx, p.Auth, p.IdentityKey, false)
		if err != nil {
			return err
		}
		name, err := s.r.resolveIdentity(ctx, id)
		if err != nil {
			return err
		}
		res, err := call.AllocResults()
		if err != nil {
			return err
		}
		return res.SetUsername(name)
	}())
}
