package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/quicproquo/qpq/relay/auth"
	"github.com/quicproquo/qpq/relay/federation"
	"github.com/quicproquo/qpq/relay/store"
	"github.com/quicproquo/qpq/rpc/errcode"
)

// How the home server serves users of other domains (see
// docs/PROTOCOL.md, Federation):
//
//   - A user is name@domain. resolveUser("bob@b.test") asks b.test's
//     server (proxyResolveUser) and records bob's identity key as living
//     at b.test (store.Remote, resolved); a delivery or channel request
//     relayed from b.test records its sender the same way (seen) unless
//     known otherwise; resolveIdentity of a sender only seen asks b.test
//     to name it (proxyResolveIdentity) and records the answer.
//   - A call that names a key recorded as living elsewhere is served
//     through that domain's server: fetchKeyPackage, fetchHybridKey(s)
//     and createChannel while the client waits, enqueue and batchEnqueue
//     through the store's queue for that domain (acknowledged once
//     queued on disk; the seq answered is the delivery's place in that
//     queue).
//   - A 1:1 channel across domains is decided by the home server of the
//     pair's bytewise lower identity key; the other records it as
//     imported. Its id is the same everywhere (internal/chanid).
//   - A key registered here is always local; a key known nowhere is
//     treated as local, as without federation.

func (r *Relay) startFederation() error {
	fc := *r.cfg.Federation
	if fc.Domain == "" {
		fc.Domain = r.cfg.Domain
	}
	if r.cfg.Domain == "" || fc.Domain != r.cfg.Domain {
		return errors.New("relay: federation needs the server's domain (Config.Domain), and no other")
	}
	fc.MaxPayload = r.cfg.Limits.MaxPayload
	fc.MaxBatch = r.cfg.Limits.MaxBatchRecipients
	if fc.Logger == nil {
		fc.Logger = r.cfg.Logger.With("component", "federation")
	}
	if fc.Registry == nil {
		fc.Registry = r.cfg.Registry
	}
	if fc.Now == nil {
		fc.Now = r.cfg.Now
	}
	fc.RateOff = fc.RateOff || r.cfg.Rates.Off
	f, err := federation.New(fc, r.st, fedHandler{r})
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	r.fed = f
	f.Start() // only now: peers' calls read r.fed
	return nil
}

// Federation returns the relay's federation, or nil without one.
func (r *Relay) Federation() *federation.Federation { return r.fed }

// homes returns where each key lives: "" here (registered here, or known
// nowhere), else its domain. Without federation everything is here.
func (r *Relay) homes(keys ...store.Key) ([]string, error) {
	if r.fed == nil {
		return make([]string, len(keys)), nil
	}
	h, err := r.st.Homes(keys...)
	if err != nil {
		return nil, errcode.Storage(err)
	}
	return h, nil
}

// home is homes for one key.
func (r *Relay) home(k store.Key) (string, error) {
	h, err := r.homes(k)
	if err != nil {
		return "", err
	}
	return h[0], nil
}

// deliveryErr turns store.Deliver's outcomes into wire errors.
func (r *Relay) deliveryErr(err error) error {
	switch {
	case errors.Is(err, store.ErrChannelNotFound):
		return errcode.New(errcode.NotFound, "no such channel; create it with createChannel")
	case errors.Is(err, store.ErrNotChannelMember):
		return errcode.New(errcode.PermissionDenied, "the channel's members are not the sender and the recipient")
	case errors.Is(err, store.ErrInboxFull):
		return errcode.Errorf(errcode.ResourceExhausted, "recipient's inbox is full (%d messages)", r.cfg.Limits.MaxInboxDepth)
	case errors.Is(err, store.ErrRelayQueueFull):
		return errcode.Errorf(errcode.ResourceExhausted, "the queue for the recipient's home server is full (%d deliveries); it may be down", r.cfg.Limits.MaxRelayQueue)
	}
	return errcode.Storage(err)
}

// split sorts recipients into local ones and a relay per other domain,
// keeping the request order of each; place[i] says where recipient i went
// (-1 local, else the index of its relay). hops is what the relays go out
// with; a domain that is not a configured peer is failed-precondition.
func (r *Relay) split(to []store.Key, hops int, origin string) (local []store.Key, relays []store.OutRelay, place []int, err error) {
	homes, err := r.homes(to...)
	if err != nil {
		return nil, nil, nil, err
	}
	place = make([]int, len(to))
	byDomain := make(map[string]int)
	for i, k := range to {
		d := homes[i]
		if d == "" {
			place[i] = -1
			local = append(local, k)
			continue
		}
		switch {
		case d == origin:
			return nil, nil, nil, errcode.Errorf(errcode.FailedPrecondition, "%s sent a recipient this server knows as a user of %s: a routing loop", origin, d)
		case !r.fed.IsPeer(d):
			return nil, nil, nil, errcode.Errorf(errcode.FailedPrecondition, "a recipient lives at %s, which is not a federation peer of this server", d)
		case hops > r.fed.MaxHops():
			return nil, nil, nil, errcode.Errorf(errcode.FailedPrecondition, "hop limit of %d reached passing a delivery on to %s", r.fed.MaxHops(), d)
		}
		j, ok := byDomain[d]
		if !ok {
			j = len(relays)
			byDomain[d] = j
			relays = append(relays, store.OutRelay{Domain: d, Hops: uint8(hops)})
		}
		relays[j].Recipients = append(relays[j].Recipients, k)
		place[i] = j
	}
	return local, relays, place, nil
}

// seqsInOrder maps a Delivered back to request order: a local
// recipient's inbox seq, a remote one's place in its domain's queue.
func seqsInOrder(d store.Delivered, place []int) []uint64 {
	out := make([]uint64, len(place))
	next := 0
	for i, p := range place {
		if p < 0 {
			out[i] = d.Local[next]
			next++
		} else {
			out[i] = d.Relays[p]
		}
	}
	return out
}

// fetchKeyPackage pops a key package of id, here or at its home.
func (r *Relay) fetchKeyPackage(ctx context.Context, id store.Key) ([]byte, error) {
	domain, err := r.home(id)
	if err != nil {
		return nil, err
	}
	if domain != "" {
		return r.fed.FetchKeyPackage(ctx, domain, 1, id)
	}
	pkg, err := r.st.PopKeyPackage(id)
	if err != nil {
		return nil, errcode.Storage(err)
	}
	return pkg, nil
}

// hybridKeys returns the hybrid keys of ids in order: those here from the
// store, the others from their homes, one call each.
func (r *Relay) hybridKeys(ctx context.Context, ids ...store.Key) ([][]byte, error) {
	keys, err := r.st.HybridKeys(ids...)
	if err != nil {
		return nil, errcode.Storage(err)
	}
	homes, err := r.homes(ids...)
	if err != nil {
		return nil, err
	}
	for i, d := range homes {
		if d == "" {
			continue
		}
		if keys[i], err = r.fed.FetchHybridKey(ctx, d, 1, ids[i]); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// resolveUser answers resolveUser for a bare name or name@domain.
func (r *Relay) resolveUser(ctx context.Context, addr string) ([]byte, error) {
	name, domain := federation.SplitAddress(addr)
	if domain == "" || domain == r.cfg.Domain {
		if err := auth.CheckUsername(name); err != nil {
			return nil, err
		}
		u, ok, err := r.st.User(name)
		if err != nil {
			return nil, errcode.Storage(err)
		}
		if !ok {
			return nil, nil
		}
		return u.Identity[:], nil
	}
	if r.fed == nil {
		return nil, errcode.Errorf(errcode.NotFound, "%s is a user of %s, and this server does not federate", addr, domain)
	}
	if err := federation.CheckDomain(domain); err != nil {
		return nil, errcode.Errorf(errcode.InvalidArgument, "username: %v", err)
	}
	if err := auth.CheckUsername(name); err != nil {
		return nil, err
	}
	key, err := r.fed.ResolveUser(ctx, domain, 1, name)
	if err != nil || key == nil {
		return nil, err
	}
	switch err := r.st.PutRemote(store.Key(key), store.Remote{Domain: domain, Name: name, Resolved: true}); {
	case errors.Is(err, store.ErrIdentityTaken), errors.Is(err, store.ErrRemoteClaimed):
		// The key is registered here, or another domain resolved it
		// first: calls for it keep going where they went. Refuse the
		// answer rather than hand out a key this server will not route
		// to that domain.
		r.cfg.Logger.Warn("federation: a peer resolved a name to a key that lives elsewhere", "peer", domain, "err", err)
		return nil, errcode.Errorf(errcode.FailedPrecondition, "%s answered with a key that this server knows as another user's", domain)
	case err != nil:
		return nil, errcode.Storage(err)
	}
	return key, nil
}

// resolveIdentity answers resolveIdentity: a local user's name, or
// name@domain of one that lives at another server. A key only seen
// sending from a peer is named by asking that peer (proxyResolveIdentity),
// which names its own users only; the answer is recorded as a resolve, so
// it is asked once. When the peer cannot be asked or does not know the
// key, the answer is "" as for any unknown key: a name is a convenience,
// and the caller tries again when it next learns of the key.
func (r *Relay) resolveIdentity(ctx context.Context, id store.Key) (string, error) {
	name, ok, err := r.st.Username(id)
	if err != nil {
		return "", errcode.Storage(err)
	}
	if ok || r.fed == nil {
		return name, nil
	}
	rem, ok, err := r.st.RemoteOf(id)
	if err != nil {
		return "", errcode.Storage(err)
	}
	if !ok {
		return "", nil
	}
	if rem.Name == "" {
		if rem.Name, err = r.nameRemote(ctx, id, rem.Domain); err != nil || rem.Name == "" {
			return "", err
		}
	}
	return rem.Name + "@" + rem.Domain, nil
}

// nameRemote asks domain's server for the username of id, seen sending
// from there, and records it. A key is asked about at most once per
// nameRetry (see askLog), so that clients asking for a key the peer does
// not name cannot spend the peer's rate limit for this server, which
// deliveries share.
func (r *Relay) nameRemote(ctx context.Context, id store.Key, domain string) (string, error) {
	if !r.nameAsks.allow(id, r.cfg.Now()) {
		return "", nil
	}
	name, err := r.fed.ResolveIdentity(ctx, domain, 1, id)
	if err != nil {
		r.cfg.Logger.Debug("federation: could not name a sender", "peer", domain, "err", err)
		return "", nil
	}
	if name == "" {
		return "", nil
	}
	if err := auth.CheckUsername(name); err != nil {
		r.cfg.Logger.Warn("federation: a peer named its user with an invalid username", "peer", domain, "err", err)
		return "", nil
	}
	switch err := r.st.PutRemote(id, store.Remote{Domain: domain, Name: name, Resolved: true}); {
	case errors.Is(err, store.ErrIdentityTaken), errors.Is(err, store.ErrRemoteClaimed):
		// Registered here meanwhile, or another domain resolved it
		// first: the name it answers for is not this peer's to give.
		return "", nil
	case err != nil:
		return "", errcode.Storage(err)
	}
	return name, nil
}

// Bounds of askLog.
const (
	// nameRetry is how long a key that a peer did not name (or could not
	// be asked about) waits before it is asked about again.
	nameRetry = time.Minute
	// maxNameAsks bounds the keys remembered; when full, keys are not
	// asked about until entries age out.
	maxNameAsks = 10_000
)

// askLog remembers when each key was last asked about.
type askLog struct {
	mu sync.Mutex
	at map[store.Key]time.Time
	// fullUntil is when the oldest entry of a full log ages out: until
	// then a new key is refused without scanning the log again.
	fullUntil time.Time
}

// allow reports whether id may be asked about now, and if so notes it.
func (l *askLog) allow(id store.Key, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.at[id]; ok && now.Sub(t) < nameRetry {
		return false
	}
	if l.at == nil {
		l.at = make(map[store.Key]time.Time)
	}
	if _, ok := l.at[id]; !ok && len(l.at) >= maxNameAsks {
		if now.Before(l.fullUntil) {
			return false
		}
		oldest := now
		for k, t := range l.at {
			if now.Sub(t) >= nameRetry {
				delete(l.at, k)
			} else if t.Before(oldest) {
				oldest = t
			}
		}
		if len(l.at) >= maxNameAsks {
			l.fullUntil = oldest.Add(nameRetry)
			return false
		}
	}
	l.at[id] = now
	return true
}

// createChannel answers createChannel of caller (a local user) with peer.
func (r *Relay) createChannel(ctx context.Context, caller, peer store.Key) (store.ChannelID, bool, error) {
	domain, err := r.home(peer)
	if err != nil {
		return store.ChannelID{}, false, err
	}
	if domain == "" || bytes.Compare(caller[:], peer[:]) < 0 {
		// Both here, or the caller holds the lower key: decided here.
		id, created, err := r.st.CreateChannel(caller, peer)
		if err != nil {
			return store.ChannelID{}, false, errcode.Storage(err)
		}
		return id, created, nil
	}
	id, wasNew, err := r.fed.CreateChannel(ctx, domain, 1, caller, peer)
	if err != nil {
		return store.ChannelID{}, false, err
	}
	mine, err := r.st.ImportChannel(caller, peer)
	if err != nil {
		return store.ChannelID{}, false, errcode.Storage(err)
	}
	if mine != id {
		return store.ChannelID{}, false, errcode.Errorf(errcode.Internal, "%s answered a channel id that is not the pair's", domain)
	}
	return id, wasNew, nil
}

// fedHandler answers what peers ask (federation.Handler).
type fedHandler struct{ r *Relay }

var _ federation.Handler = fedHandler{}

// notOurs refuses a key a peer names as its own user that is registered
// here: a peer cannot speak for this server's users.
func (h fedHandler) notOurs(field string, k store.Key) error {
	local, err := h.r.st.IsLocal(k)
	if err != nil {
		return errcode.Storage(err)
	}
	if local {
		return errcode.Errorf(errcode.PermissionDenied, "%s is a user of this server; a peer cannot speak for it", field)
	}
	return nil
}

// passOn returns the domain a request for k must go on to, or "" to
// answer it here; a request that would go back to its origin, or beyond
// the hop limit, is refused.
func (h fedHandler) passOn(req federation.Request, k store.Key) (string, error) {
	d, err := h.r.home(k)
	switch {
	case err != nil || d == "":
		return "", err
	case d == req.Origin:
		return "", errcode.Errorf(errcode.FailedPrecondition, "%s asked for a user this server knows as one of %s: a routing loop", req.Origin, d)
	case req.Hops >= h.r.fed.MaxHops():
		return "", errcode.Errorf(errcode.FailedPrecondition, "hop limit of %d reached passing a request on to %s", h.r.fed.MaxHops(), d)
	}
	return d, nil
}

func (h fedHandler) Deliver(_ context.Context, rl federation.Relay) ([]uint64, bool, error) {
	r := h.r
	if err := h.notOurs("senderKey", rl.From); err != nil {
		return nil, false, err
	}
	local, relays, place, err := r.split(rl.To, rl.Hops+1, rl.Origin)
	if err != nil {
		return nil, false, err
	}
	in := &store.Incoming{Origin: rl.Origin, Stream: rl.Stream, Seq: rl.Seq, LearnSender: true}
	if !rl.Channel.IsZero() && len(local) == 1 && bytes.Compare(rl.From[:], local[0][:]) < 0 {
		// The sender holds the lower key: its server decided the channel.
		in.ImportChannel = true
	}
	d, err := r.st.Deliver(store.Delivery{From: rl.From, Channel: rl.Channel, Payload: rl.Payload, Local: local, Relays: relays, Incoming: in})
	if err != nil {
		return nil, false, r.deliveryErr(err)
	}
	if d.Duplicate {
		return nil, true, nil
	}
	r.m.enqueued.Add(float64(len(d.Local)))
	return seqsInOrder(d, place), false, nil
}

func (h fedHandler) FetchKeyPackage(ctx context.Context, req federation.Request, id store.Key) ([]byte, error) {
	return h.keyRead(ctx, req, id, h.r.fed.FetchKeyPackage, h.r.st.PopKeyPackage)
}

func (h fedHandler) FetchHybridKey(ctx context.Context, req federation.Request, id store.Key) ([]byte, error) {
	return h.keyRead(ctx, req, id, h.r.fed.FetchHybridKey, func(id store.Key) ([]byte, error) {
		keys, err := h.r.st.HybridKeys(id)
		if err != nil {
			return nil, err
		}
		return keys[0], nil
	})
}

// keyRead answers a read of id's data: from the store here, or passed on
// to its home with one more hop.
func (h fedHandler) keyRead(ctx context.Context, req federation.Request, id store.Key,
	remote func(context.Context, string, int, store.Key) ([]byte, error), local func(store.Key) ([]byte, error)) ([]byte, error) {
	d, err := h.passOn(req, id)
	switch {
	case err != nil:
		return nil, err
	case d != "":
		return remote(ctx, d, req.Hops+1, id)
	}
	b, err := local(id)
	if err != nil {
		return nil, errcode.Storage(err)
	}
	return b, nil
}

func (h fedHandler) ResolveUser(_ context.Context, _ federation.Request, name string) ([]byte, error) {
	if err := auth.CheckUsername(name); err != nil {
		return nil, err
	}
	u, ok, err := h.r.st.User(name)
	if err != nil {
		return nil, errcode.Storage(err)
	}
	if !ok {
		return nil, nil
	}
	return u.Identity[:], nil
}

// ResolveIdentity names a user of this server, and no one else: a key
// that lives elsewhere is that server's to name.
func (h fedHandler) ResolveIdentity(_ context.Context, _ federation.Request, id store.Key) (string, error) {
	name, _, err := h.r.st.Username(id)
	if err != nil {
		return "", errcode.Storage(err)
	}
	return name, nil
}

func (h fedHandler) CreateChannel(ctx context.Context, req federation.Request, caller, peer store.Key) (store.ChannelID, bool, error) {
	if err := h.notOurs("callerKey", caller); err != nil {
		return store.ChannelID{}, false, err
	}
	d, err := h.passOn(req, peer)
	if err != nil {
		return store.ChannelID{}, false, err
	}
	if d != "" {
		return h.r.fed.CreateChannel(ctx, d, req.Hops+1, caller, peer)
	}
	if bytes.Compare(peer[:], caller[:]) > 0 {
		return store.ChannelID{}, false, errcode.New(errcode.FailedPrecondition, "the home server of the lower key of a pair decides its channel; callerKey is the lower, so that is yours")
	}
	id, created, err := h.r.st.CreateChannel(caller, peer)
	if err != nil {
		return store.ChannelID{}, false, errcode.Storage(err)
	}
	if err := h.r.st.PutRemote(caller, store.Remote{Domain: req.Origin}); err != nil && !errors.Is(err, store.ErrIdentityTaken) {
		return store.ChannelID{}, false, errcode.Storage(err)
	}
	return id, created, nil
}
