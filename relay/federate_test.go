package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/quicproquo/qpq/internal/chanid"
	"github.com/quicproquo/qpq/relay/federation"
	"github.com/quicproquo/qpq/relay/federation/fedtest"
	"github.com/quicproquo/qpq/relay/store"
	"github.com/quicproquo/qpq/rpc"
	"github.com/quicproquo/qpq/rpc/errcode"
)

// fedServer is a real home server of one domain on loopback (QUIC for
// clients, QUIC with mutual TLS for peers, bbolt on disk), restartable on
// the same data and addresses.
type fedServer struct {
	*fedtest.Home
	t     *testing.T
	peers []federation.Peer
	tune  func(*Config)
	log   *syncBuffer

	srv *testServer
}

func newFedServer(t *testing.T, domain string) *fedServer {
	return &fedServer{Home: fedtest.NewHome(t, domain), t: t, log: new(syncBuffer)}
}

// pin makes s accept and call each of others.
func (s *fedServer) pin(others ...*fedServer) {
	for _, o := range others {
		s.peers = append(s.peers, o.Peer())
	}
}

func (s *fedServer) config() Config {
	cfg := Config{
		DataDir: s.Dir,
		Domain:  s.Domain,
		Logger:  slog.New(slog.NewTextHandler(s.log, &slog.HandlerOptions{Level: slog.LevelDebug})).With("server", s.Domain),
		Federation: &federation.Config{
			Listen:      s.Addr,
			Certificate: s.Cert,
			Peers:       s.peers,
			RetryMin:    10 * time.Millisecond,
			RetryMax:    100 * time.Millisecond,
			CallTimeout: 5 * time.Second,
			DialTimeout: 300 * time.Millisecond,
		},
	}
	if s.tune != nil {
		s.tune(&cfg)
	}
	return cfg
}

func (s *fedServer) start() {
	s.t.Helper()
	if s.srv == nil {
		s.srv = startServer(s.t, s.config())
		return
	}
	s.srv.cfg = s.config()
	s.srv.start()
}

func (s *fedServer) stop() { s.srv.shutdown() }

func (s *fedServer) relay() *Relay { return s.srv.relay }

// fedUser is a user of one server with a logged-in client there.
type fedUser struct {
	*user
	addr string // name@domain
}

// userWithKey registers name with a given identity key.
func (s *fedServer) userWithKey(name string, pub ed25519.PublicKey) *fedUser {
	s.t.Helper()
	u := &user{name: name, id: pub, c: s.srv.dial()}
	if err := s.relay().st.CreateUser(name, store.User{Identity: u.key(), Record: bytes.Repeat([]byte{1}, 192)}); err != nil {
		s.t.Fatal(err)
	}
	tok, err := s.relay().accounts.IssueToken(u.key())
	if err != nil {
		s.t.Fatal(err)
	}
	u.c.SetToken(tok)
	return &fedUser{user: u, addr: name + "@" + s.Domain}
}

// keyPair returns two identity keys, the first bytewise lower.
func keyPair() (lo, hi ed25519.PublicKey) {
	a, _, _ := ed25519.GenerateKey(rand.Reader)
	b, _, _ := ed25519.GenerateKey(rand.Reader)
	if bytes.Compare(a, b) > 0 {
		a, b = b, a
	}
	return a, b
}

// twoDomains runs a.test and b.test, each pinning the other.
func twoDomains(t *testing.T) (a, b *fedServer) {
	a, b = newFedServer(t, "a.test"), newFedServer(t, "b.test")
	a.pin(b)
	b.pin(a)
	a.start()
	b.start()
	return a, b
}

// waitFor fetches with fetchWait until n messages arrived, and then
// checks that no more follow.
func waitFor(t *testing.T, u *fedUser, ch []byte, n int) []rpc.Envelope {
	t.Helper()
	ctx, cancel := context.WithTimeout(bg, 30*time.Second)
	defer cancel()
	var got []rpc.Envelope
	for len(got) < n {
		envs, err := u.c.FetchWait(ctx, u.id, ch, 5*time.Second, 0)
		if err != nil {
			t.Fatalf("%s waiting for %d messages (got %d): %v", u.addr, n, len(got), err)
		}
		got = append(got, envs...)
	}
	if len(got) != n {
		t.Fatalf("%s got %d messages, want %d", u.addr, len(got), n)
	}
	return got
}

// TestFederatedDM: alice@a.test and bob@b.test find each other by name,
// open their 1:1 channel (decided once, by the home of the lower key),
// and alice's Welcome and message reach bob through both servers, and
// bob's answer reaches alice — at the NodeService level, payloads opaque.
// Run for both key orders, so that each server is the deciding one once.
func TestFederatedDM(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, aliceLower := range []bool{true, false} {
		t.Run(fmt.Sprintf("alice lower %v", aliceLower), func(t *testing.T) {
			a, b := twoDomains(t)
			lo, hi := keyPair()
			ka, kb := lo, hi
			if !aliceLower {
				ka, kb = hi, lo
			}
			alice, bob := a.userWithKey("alice", ka), b.userWithKey("bob", kb)

			if err := bob.c.UploadHybridKey(bg, bob.id, hybridKey(t)); err != nil {
				t.Fatal(err)
			}
			for _, kp := range []string{"bob-kp-1", "bob-kp-2"} {
				if _, err := bob.c.UploadKeyPackage(bg, bob.id, []byte(kp)); err != nil {
					t.Fatal(err)
				}
			}

			// Names resolve at one's own server, across domains.
			if got := must[[]byte](t)(alice.c.ResolveUser(bg, "bob@b.test")); !bytes.Equal(got, bob.id) {
				t.Fatalf("alice resolved bob@b.test to %x", got)
			}
			if got := must[[]byte](t)(bob.c.ResolveUser(bg, "alice@a.test")); !bytes.Equal(got, alice.id) {
				t.Fatalf("bob resolved alice@a.test to %x", got)
			}
			if got := must[[]byte](t)(alice.c.ResolveUser(bg, "nobody@b.test")); got != nil {
				t.Fatalf("an unknown remote name resolved to %x", got)
			}
			if got := must[string](t)(alice.c.ResolveIdentity(bg, bob.id)); got != "bob@b.test" {
				t.Fatalf("resolveIdentity(bob) at a.test = %q", got)
			}
			if got := must[[]byte](t)(alice.c.ResolveUser(bg, "alice@a.test")); !bytes.Equal(got, alice.id) {
				t.Fatal("one's own domain does not resolve locally")
			}

			// Keys through the proxy: bob's key package (single use) and
			// hybrid key.
			if kp := must[[]byte](t)(alice.c.FetchKeyPackage(bg, bob.id)); string(kp) != "bob-kp-1" {
				t.Fatalf("key package via a.test = %q", kp)
			}
			hk := must[[]byte](t)(alice.c.FetchHybridKey(bg, bob.id))
			keys := must[[][]byte](t)(alice.c.FetchHybridKeys(bg, [][]byte{bob.id, alice.id}))
			if len(hk) != HybridKeySize || !bytes.Equal(keys[0], hk) || keys[1] != nil {
				t.Fatalf("hybrid keys via a.test: %d bytes, %d entries", len(hk), len(keys))
			}

			// The channel: one id, exactly one initiator.
			idA, newA, err := alice.c.CreateChannel(bg, bob.id)
			if err != nil {
				t.Fatal(err)
			}
			idB, newB, err := bob.c.CreateChannel(bg, alice.id)
			if err != nil {
				t.Fatal(err)
			}
			if want := chanid.Derive(alice.id, bob.id); !bytes.Equal(idA, idB) || !bytes.Equal(idA, want[:]) {
				t.Fatalf("channel ids %x / %x", idA, idB)
			}
			if newA == newB || !newA {
				t.Fatalf("wasNew alice %v, bob %v: alice called first and must initiate", newA, newB)
			}

			// Alice sends the Welcome and a message on the channel; bob
			// reads them in order from his inbox at b.test.
			for _, m := range []string{"Welcome", "hello bob"} {
				if _, err := alice.c.Enqueue(bg, bob.id, idA, []byte(m)); err != nil {
					t.Fatal(err)
				}
			}
			got := waitFor(t, bob, idB, 2)
			if string(got[0].Data) != "Welcome" || string(got[1].Data) != "hello bob" || got[0].Seq >= got[1].Seq {
				t.Fatalf("bob got %v", got)
			}
			// Bob answers.
			if _, err := bob.c.Enqueue(bg, alice.id, idB, []byte("hi alice")); err != nil {
				t.Fatal(err)
			}
			if got := waitFor(t, alice, idA, 1); string(got[0].Data) != "hi alice" {
				t.Fatalf("alice got %v", got)
			}
			// The default inbox works across domains too, by batch.
			seqs, err := alice.c.BatchEnqueue(bg, [][]byte{bob.id}, nil, []byte("batch"))
			if err != nil || len(seqs) != 1 {
				t.Fatalf("batch: %v, %v", seqs, err)
			}
			if got := waitFor(t, bob, nil, 1); string(got[0].Data) != "batch" {
				t.Fatalf("bob's default inbox: %v", got)
			}
			// A key of a.test cannot be used by b.test: bob's server
			// cannot relay in alice's name to alice's own server's
			// users; and a channel id of another pair is refused.
			other := chanid.Derive(bob.id, randKey())
			_, err = bob.c.Enqueue(bg, alice.id, other[:], []byte("x"))
			wantCode(t, "enqueue on another pair's channel", err, errcode.NotFound)
		})
	}
}

// TestFederatedSenderNamed: bob's server learns alice@a.test only from
// her delivery (bob never resolved her); resolveIdentity at b.test still
// names her, by asking a.test, which names its own users and no one
// else's. The answer is kept: asked again with a.test down, it holds.
func TestFederatedSenderNamed(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("named", func(t *testing.T) {
		a, b := twoDomains(t)
		alice, bob := a.userWithKey("alice", randKey()), b.userWithKey("bob", randKey())
		if got := must[[]byte](t)(alice.c.ResolveUser(bg, "bob@b.test")); !bytes.Equal(got, bob.id) {
			t.Fatalf("alice resolved bob@b.test to %x", got)
		}
		if got := must[string](t)(bob.c.ResolveIdentity(bg, alice.id)); got != "" {
			t.Fatalf("b.test named alice before she sent anything: %q", got)
		}
		if _, err := alice.c.Enqueue(bg, bob.id, nil, []byte("hi bob")); err != nil {
			t.Fatal(err)
		}
		waitFor(t, bob, nil, 1)
		if got := must[string](t)(bob.c.ResolveIdentity(bg, alice.id)); got != "alice@a.test" {
			t.Fatalf("resolveIdentity(alice) at b.test = %q, want alice@a.test", got)
		}

		// A server names only its own users: a.test knows bob (resolved),
		// but it is not a.test's to name him.
		ctx, cancel := context.WithTimeout(bg, 10*time.Second)
		defer cancel()
		if name, err := b.relay().fed.ResolveIdentity(ctx, "a.test", 1, store.Key(bob.id)); err != nil || name != "" {
			t.Fatalf("a.test named b.test's user: %q, %v", name, err)
		}
		if name, err := b.relay().fed.ResolveIdentity(ctx, "a.test", 1, store.Key(alice.id)); err != nil || name != "alice" {
			t.Fatalf("a.test named its own user %q, %v", name, err)
		}
		// A key seen from a.test that a.test does not name is asked about
		// once a minute at most, however often clients ask.
		stranger := store.Key(randKey())
		if err := b.relay().st.PutRemote(stranger, store.Remote{Domain: "a.test"}); err != nil {
			t.Fatal(err)
		}
		asked := askedToName(t, a)
		for range 3 {
			if got := must[string](t)(bob.c.ResolveIdentity(bg, stranger[:])); got != "" {
				t.Fatalf("a key a.test does not know was named %q", got)
			}
		}
		if n := askedToName(t, a) - asked; n != 1 {
			t.Fatalf("a.test was asked to name the stranger %v times, want once", n)
		}

		a.stop()
		if got := must[string](t)(bob.c.ResolveIdentity(bg, alice.id)); got != "alice@a.test" {
			t.Fatalf("with a.test down, resolveIdentity(alice) = %q", got)
		}
	})
}

// askedToName counts the proxyResolveIdentity calls s answered.
func askedToName(t *testing.T, s *fedServer) float64 {
	t.Helper()
	mfs, err := s.relay().Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "qpq_federation_calls_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "method" && l.GetValue() == "proxyResolveIdentity" {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

// TestFederationPeerDown: while b.test is stopped, alice's messages to
// bob are acknowledged and wait in a.test's queue; once b.test is back
// they arrive, in order, once each.
func TestFederationPeerDown(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		a, b := twoDomains(t)
		lo, hi := keyPair()
		alice, bob := a.userWithKey("alice", lo), b.userWithKey("bob", hi)
		must[[]byte](t)(alice.c.ResolveUser(bg, "bob@b.test"))

		b.stop()
		const n = 5
		for i := range n {
			if _, err := alice.c.Enqueue(bg, bob.id, nil, []byte(fmt.Sprint("m", i))); err != nil {
				t.Fatalf("enqueue %d while b.test is down: %v", i, err)
			}
		}
		if q, _ := a.relay().st.RelayQueued("b.test"); q != n {
			t.Fatalf("%d queued at a.test, want %d", q, n)
		}
		// The sender is trying and failing meanwhile.
		waitUntil(t, func() bool { return relayed(a, "b.test", "retry") >= 2 })
		// A restart of a.test keeps the queue (and starts a new relay
		// stream).
		a.stop()
		a.start()

		b.start()
		bob.c = b.srv.dial()
		tok, err := b.relay().accounts.IssueToken(bob.key())
		if err != nil {
			t.Fatal(err)
		}
		bob.c.SetToken(tok)
		got := waitFor(t, bob, nil, n)
		for i, e := range got {
			if string(e.Data) != fmt.Sprint("m", i) {
				t.Fatalf("message %d is %q: out of order or repeated", i, e.Data)
			}
		}
		waitUntil(t, func() bool { q, _ := a.relay().st.RelayQueued("b.test"); return q == 0 })
		if extra, err := bob.c.Fetch(bg, bob.id, nil, 0); err != nil || len(extra) != 0 {
			t.Fatalf("after the queue drained bob has %d more: %v", len(extra), err)
		}
	})
}

// relayed reads qpq_federation_relayed_total{peer, result} of a server.
func relayed(s *fedServer, peer, result string) float64 {
	mfs, err := s.relay().Registry().Gather()
	if err != nil {
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() != "qpq_federation_relayed_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["peer"] == peer && labels["result"] == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(bg, 30*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition not reached in 30 s")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestFederationRefusesUnpinned: c.test pins a.test, but a.test never
// pinned c.test's certificate: c.test cannot resolve, fetch or relay at
// a.test, gets an error that says why, and a.test logs the refusal.
// Deliveries from c.test are kept and retried, not dropped.
func TestFederationRefusesUnpinned(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		a, c := newFedServer(t, "a.test"), newFedServer(t, "c.test")
		c.pin(a)
		a.start()
		c.start()
		lo, hi := keyPair()
		alice, carol := a.userWithKey("alice", lo), c.userWithKey("carol", hi)

		_, err := carol.c.ResolveUser(bg, "alice@a.test")
		wantCode(t, "resolve at a server that did not pin us", err, errcode.PermissionDenied)
		if !strings.Contains(err.Error(), "not pinned") && !strings.Contains(err.Error(), "pinned no peer") {
			t.Errorf("the error does not say why: %v", err)
		}
		if !strings.Contains(a.log.String(), "not pinned for any peer") || !strings.Contains(a.log.String(), c.Fingerprint.String()) {
			t.Errorf("a.test logged no refusal naming c.test's certificate:\n%s", a.log)
		}

		if err := c.relay().st.PutRemote(alice.key(), store.Remote{Domain: "a.test", Resolved: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := carol.c.Enqueue(bg, alice.id, nil, []byte("let me in")); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, func() bool { return relayed(c, "a.test", "retry") >= 2 })
		if q, _ := c.relay().st.RelayQueued("a.test"); q != 1 {
			t.Fatalf("the refused delivery is not kept for retry (queue %d)", q)
		}
		if envs, _ := alice.c.Fetch(bg, alice.id, nil, 0); len(envs) != 0 {
			t.Fatalf("alice received %q from an unpinned server", envs[0].Data)
		}
	})
}

// TestFederationOriginMismatch: a configured peer (b.test's certificate)
// that names another origin (c.test) is refused, and the refusal logged.
func TestFederationOriginMismatch(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		a, b := newFedServer(t, "a.test"), newFedServer(t, "b.test")
		a.pin(b)
		a.start()
		// b.test's key pair, calling itself c.test.
		impostor, err := federation.New(federation.Config{Domain: "c.test", Certificate: b.Cert, Peers: []federation.Peer{a.Peer()}}, a.relay().st, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer impostor.Close()
		_, _, err = impostor.Health(bg, "a.test")
		wantCode(t, "a call whose origin is not the certificate's", err, errcode.Unauthenticated)
		if !strings.Contains(err.Error(), "origin c.test does not match b.test") {
			t.Errorf("error %v", err)
		}
		if !strings.Contains(a.log.String(), "call refused") {
			t.Errorf("a.test logged no refusal:\n%s", a.log)
		}
		// b.test itself, with its own name, is welcome.
		b.pin(a)
		b.start()
		if st, theirs, err := b.relay().fed.Health(bg, "a.test"); err != nil || st != "ok" || theirs != "a.test" {
			t.Fatalf("health: %q %q %v", st, theirs, err)
		}
	})
}

// TestFederationHopLimit: three servers that each think bob lives at the
// next one pass requests round until the hop limit stops them: a read
// fails with the hop limit, a delivery is dropped (and counted) instead
// of circling forever.
func TestFederationHopLimit(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		a, b, c := newFedServer(t, "a.test"), newFedServer(t, "b.test"), newFedServer(t, "c.test")
		a.pin(b, c)
		b.pin(a, c)
		c.pin(a, b)
		a.start()
		b.start()
		c.start()
		lo, _ := keyPair()
		alice := a.userWithKey("alice", lo)
		bob := store.Key(randKey())
		for s, next := range map[*fedServer]string{a: "b.test", b: "c.test", c: "a.test"} {
			if err := s.relay().st.PutRemote(bob, store.Remote{Domain: next, Resolved: true}); err != nil {
				t.Fatal(err)
			}
		}
		_, err := alice.c.FetchKeyPackage(bg, bob[:])
		wantCode(t, "a read that goes round", err, errcode.FailedPrecondition)
		if !strings.Contains(err.Error(), "hop limit") {
			t.Fatalf("not stopped by the hop limit: %v", err)
		}
		if _, err := alice.c.Enqueue(bg, bob[:], nil, []byte("round and round")); err != nil {
			t.Fatal(err)
		}
		var dropped float64
		waitUntil(t, func() bool {
			dropped = 0
			for _, s := range []*fedServer{a, b, c} {
				for _, p := range []string{"a.test", "b.test", "c.test"} {
					if p != s.Domain {
						dropped += relayed(s, p, "dropped")
					}
				}
			}
			return dropped > 0
		})
		for _, s := range []*fedServer{a, b, c} {
			for _, p := range []string{"a.test", "b.test", "c.test"} {
				if p == s.Domain {
					continue
				}
				waitUntil(t, func() bool { q, _ := s.relay().st.RelayQueued(p); return q == 0 })
			}
		}
		if dropped != 1 {
			t.Fatalf("%v deliveries dropped, want the one", dropped)
		}
	})
}

// TestFederationPeerRate: a peer beyond its rate limit gets
// resource-exhausted.
func TestFederationPeerRate(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		a, b := newFedServer(t, "a.test"), newFedServer(t, "b.test")
		a.pin(b)
		b.pin(a)
		b.tune = func(c *Config) { c.Federation.Rate, c.Federation.Burst = 0.001, 3 }
		a.start()
		b.start()
		lo, _ := keyPair()
		alice := a.userWithKey("alice", lo)
		var last error
		for range 4 {
			_, last = alice.c.ResolveUser(bg, "bob@b.test")
		}
		wantCode(t, "the fourth call within the burst of 3", last, errcode.ResourceExhausted)
	})
}

// A full askLog refuses new keys until its oldest entry ages out, then
// makes room; a key it holds is asked about again after nameRetry.
func TestAskLogFull(t *testing.T) {
	var l askLog
	t0 := time.Unix(1_000_000, 0)
	key := func(i int) store.Key {
		var k store.Key
		k[0], k[1], k[2] = byte(i), byte(i>>8), byte(i>>16)
		return k
	}
	for i := range maxNameAsks {
		// The first key is the oldest, a second older than the rest.
		at := t0.Add(time.Second)
		if i == 0 {
			at = t0
		}
		if !l.allow(key(i), at) {
			t.Fatalf("key %d refused before the log was full", i)
		}
	}
	if l.allow(key(0), t0.Add(nameRetry/2)) {
		t.Fatal("a key asked about half a retry ago was allowed again")
	}
	fresh := key(maxNameAsks)
	for _, at := range []time.Duration{2 * time.Second, nameRetry / 2, nameRetry - time.Millisecond} {
		if l.allow(fresh, t0.Add(at)) {
			t.Fatalf("a new key was allowed %v in, with the log full of fresh entries", at)
		}
	}
	// The oldest entry ages out first: one new key fits, the next does not.
	if !l.allow(fresh, t0.Add(nameRetry)) {
		t.Fatal("a new key was refused once the oldest entry had aged out")
	}
	if l.allow(key(maxNameAsks+1), t0.Add(nameRetry)) {
		t.Fatal("a second new key was allowed while the others are still fresh")
	}
	// A held key ages out in place, without needing room.
	if !l.allow(key(5), t0.Add(nameRetry+time.Second)) {
		t.Fatal("a held key was not allowed again after nameRetry")
	}
	// Once everything has aged out, new keys are welcome again.
	if !l.allow(key(maxNameAsks+1), t0.Add(2*nameRetry+time.Second)) {
		t.Fatal("a new key was refused after every entry aged out")
	}
}
