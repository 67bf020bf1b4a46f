package relay

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/quicproquo/qpq/rpc"
	"github.com/quicproquo/qpq/rpc/errcode"
	"github.com/quicproquo/qpq/rpc/pake"
	"github.com/quicproquo/qpq/schema"
)

// TestOPAQUE runs real registrations and logins through the client over
// QUIC.
func TestOPAQUE(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		s := startServer(t, Config{LoginTTL: time.Minute})
		c := s.dial()
		alice, _, _ := ed25519.GenerateKey(rand.Reader)
		if err := c.Register(bg, "alice", []byte("correct horse"), alice); err != nil {
			t.Fatal(err)
		}
		wantCode(t, "taken username", c.Register(bg, "alice", []byte("x"), randKey()), errcode.AlreadyExists)
		wantCode(t, "taken identity", c.Register(bg, "alice2", []byte("x"), alice), errcode.AlreadyExists)

		_, err := c.Login(bg, "alice", []byte("wrong"), alice)
		wantCode(t, "wrong password", err, errcode.Unauthenticated)
		_, err = c.Login(bg, "nobody", []byte("correct horse"), alice)
		wantCode(t, "unknown user", err, errcode.Unauthenticated)
		_, err = c.Login(bg, "alice", []byte("correct horse"), randKey())
		wantCode(t, "another identity key", err, errcode.PermissionDenied)

		token, err := c.Login(bg, "alice", []byte("correct horse"), alice)
		if err != nil {
			t.Fatal(err)
		}
		if id, err := c.ResolveUser(bg, "alice"); err != nil || !bytes.Equal(id, alice) {
			t.Fatalf("authenticated call with the login's token: %x, %v", id, err)
		}

		checkLogins(t, s, "ok", "denied", "abandoned")

		// The token survives a restart.
		s.restart()
		c = s.dial()
		c.SetToken(token)
		if _, err := c.ResolveIdentity(bg, alice); err != nil {
			t.Fatalf("token after restart: %v", err)
		}

		// An unknown user's KE2 is the size of a real one.
		_, ke1, _ := pake.StartLogin([]byte("pw"))
		real := must[[]byte](t)(c.OpaqueLoginStart(bg, "alice", ke1))
		fake := must[[]byte](t)(c.OpaqueLoginStart(bg, "nobody", ke1))
		if len(real) != len(fake) {
			t.Fatalf("KE2 of a known user %d bytes, of an unknown one %d", len(real), len(fake))
		}

		// Finish without start, and after the login expired.
		_, err = s.dial().OpaqueLoginFinish(bg, "alice", make([]byte, 64), alice)
		wantCode(t, "finish without start", err, errcode.FailedPrecondition)
		l, ke1, _ := pake.StartLogin([]byte("correct horse"))
		ke2 := must[[]byte](t)(c.OpaqueLoginStart(bg, "alice", ke1))
		ke3 := must[[]byte](t)(l.Finish(ke2))
		s.clock.add(time.Minute)
		_, err = c.OpaqueLoginFinish(bg, "alice", ke3, alice)
		wantCode(t, "finish after the login expired", err, errcode.FailedPrecondition)

		checkLogins(t, s, "failed", "abandoned")
	})
}

func checkLogins(t *testing.T, s *testServer, results ...string) {
	t.Helper()
	for _, r := range results {
		if n := value(t, s.relay.m.logins.WithLabelValues(r)); n < 1 {
			t.Errorf("logins{result=%q} = %v", r, n)
		}
	}
}

// authedCalls makes one well-formed call of every method that needs a
// caller, with the client's current token.
func authedCalls(self []byte) map[string]func(c *rpc.Client) error {
	peer := bytes.Repeat([]byte{7}, 32)
	return map[string]func(c *rpc.Client) error{
		"uploadKeyPackage": func(c *rpc.Client) error { _, err := c.UploadKeyPackage(bg, self, []byte("kp")); return err },
		"fetchKeyPackage":  func(c *rpc.Client) error { _, err := c.FetchKeyPackage(bg, peer); return err },
		"enqueue":          func(c *rpc.Client) error { _, err := c.Enqueue(bg, peer, nil, []byte("x")); return err },
		"batchEnqueue":     func(c *rpc.Client) error { _, err := c.BatchEnqueue(bg, [][]byte{peer}, nil, []byte("x")); return err },
		"fetch":            func(c *rpc.Client) error { _, err := c.Fetch(bg, self, nil, 0); return err },
		"fetchWait":        func(c *rpc.Client) error { _, err := c.FetchWait(bg, self, nil, 0, 0); return err },
		"peek":             func(c *rpc.Client) error { _, err := c.Peek(bg, self, nil, 0); return err },
		"peekWait":         func(c *rpc.Client) error { _, err := c.PeekWait(bg, self, nil, 0, 0); return err },
		"ack":              func(c *rpc.Client) error { return c.Ack(bg, self, nil, 1) },
		"uploadHybridKey":  func(c *rpc.Client) error { return c.UploadHybridKey(bg, self, make([]byte, HybridKeySize)) },
		"fetchHybridKey":   func(c *rpc.Client) error { _, err := c.FetchHybridKey(bg, peer); return err },
		"fetchHybridKeys":  func(c *rpc.Client) error { _, err := c.FetchHybridKeys(bg, [][]byte{peer}); return err },
		"publishEndpoint":  func(c *rpc.Client) error { return c.PublishEndpoint(bg, self, []byte("{}")) },
		"resolveEndpoint":  func(c *rpc.Client) error { _, err := c.ResolveEndpoint(bg, peer); return err },
		"createChannel":    func(c *rpc.Client) error { _, _, err := c.CreateChannel(bg, peer); return err },
		"resolveUser":      func(c *rpc.Client) error { _, err := c.ResolveUser(bg, "alice"); return err },
		"resolveIdentity":  func(c *rpc.Client) error { _, err := c.ResolveIdentity(bg, peer); return err },
	}
}

func TestEveryMethodNeedsAValidToken(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		s := startServer(t, Config{TokenLifetime: time.Hour})
		other := startServer(t, Config{})
		alice := s.newUser("alice")
		foreign, err := other.relay.accounts.IssueToken(alice.key())
		if err != nil {
			t.Fatal(err)
		}
		expiring := s.newUser("expiring")
		s.clock.add(30 * time.Minute)
		fresh := s.newUser("fresh") // issued half an hour later
		s.clock.add(30 * time.Minute)

		tokens := map[string][]byte{
			"no token":        nil,
			"short token":     {1, 2, 3},
			"unknown token":   bytes.Repeat([]byte{9}, 32),
			"foreign token":   foreign,
			"expired token":   expiring.c.Token(),
			"another's token": nil, // filled below: valid, but for a call on alice's own data
		}
		c := s.dial()
		for name, tok := range tokens {
			if name == "another's token" {
				continue
			}
			c.SetToken(tok)
			for method, call := range authedCalls(alice.id) {
				wantCode(t, method+" with "+name, call(c), errcode.Unauthenticated)
			}
		}
		// A valid token of someone else: calls on alice's own data are
		// denied, never served.
		c.SetToken(fresh.c.Token())
		for _, method := range []string{"uploadKeyPackage", "fetch", "fetchWait", "peek", "peekWait", "ack", "uploadHybridKey", "publishEndpoint"} {
			wantCode(t, method+" with another's token", authedCalls(alice.id)[method](c), errcode.PermissionDenied)
		}

		// No auth struct at all, and auth version 2.
		f, release := c.Raw().ResolveUser(bg, func(p schema.NodeService_resolveUser_Params) error { return p.SetUsername("alice") })
		_, err = f.Struct()
		release()
		wantCode(t, "call without auth", err, errcode.Unauthenticated)
		f, release = c.Raw().ResolveUser(bg, func(p schema.NodeService_resolveUser_Params) error {
			a, err := p.NewAuth()
			if err != nil {
				return err
			}
			a.SetVersion(2)
			return firstErr(a.SetAccessToken(fresh.c.Token()), p.SetUsername("alice"))
		})
		_, err = f.Struct()
		release()
		wantCode(t, "auth version 2", err, errcode.InvalidArgument)

		// health needs nothing.
		c.SetToken(nil)
		if st, err := c.Health(bg); err != nil || st != "ok" {
			t.Fatalf("health = %q, %v", st, err)
		}
	})
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// TestBadInput sends malformed arguments to every method.
func TestBadInput(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		s := startServer(t, Config{})
		alice := s.newUser("alice")
		c := alice.c
		short, long := make([]byte, 31), make([]byte, 33)
		for _, k := range [][]byte{nil, short, long} {
			for what, err := range map[string]error{
				"uploadKeyPackage": func() error { _, err := c.UploadKeyPackage(bg, k, []byte("kp")); return err }(),
				"fetchKeyPackage":  func() error { _, err := c.FetchKeyPackage(bg, k); return err }(),
				"enqueue":          func() error { _, err := c.Enqueue(bg, k, nil, []byte("x")); return err }(),
				"batchEnqueue":     func() error { _, err := c.BatchEnqueue(bg, [][]byte{k}, nil, []byte("x")); return err }(),
				"fetch":            func() error { _, err := c.Fetch(bg, k, nil, 0); return err }(),
				"fetchWait":        func() error { _, err := c.FetchWait(bg, k, nil, 0, 0); return err }(),
				"peek":             func() error { _, err := c.Peek(bg, k, nil, 0); return err }(),
				"ack":              c.Ack(bg, k, nil, 0),
				"uploadHybridKey":  c.UploadHybridKey(bg, k, make([]byte, HybridKeySize)),
				"fetchHybridKey":   func() error { _, err := c.FetchHybridKey(bg, k); return err }(),
				"fetchHybridKeys":  func() error { _, err := c.FetchHybridKeys(bg, [][]byte{k}); return err }(),
				"publishEndpoint":  c.PublishEndpoint(bg, k, []byte("{}")),
				"resolveEndpoint":  func() error { _, err := c.ResolveEndpoint(bg, k); return err }(),
				"createChannel":    func() error { _, _, err := c.CreateChannel(bg, k); return err }(),
				"resolveIdentity":  func() error { _, err := c.ResolveIdentity(bg, k); return err }(),
				"opaqueRegisterFinish": func() error {
					return c.OpaqueRegisterFinish(bg, "zed", make([]byte, 192), k)
				}(),
				"opaqueLoginFinish": func() error { _, err := c.OpaqueLoginFinish(bg, "zed", make([]byte, 64), k); return err }(),
			} {
				wantCode(t, what+" with a key of "+string(rune('0'+len(k)/10))+string(rune('0'+len(k)%10))+" bytes", err, errcode.InvalidArgument)
			}
		}

		// Version fields other than 1.
		for what, err := range map[string]error{
			"enqueue": rawErr(c.Raw().Enqueue(bg, func(p schema.NodeService_enqueue_Params) error {
				p.SetVersion(2)
				return firstErr(p.SetRecipientKey(alice.id), p.SetPayload([]byte("x")), setAuth(p.NewAuth, c))
			})),
			"batchEnqueue": rawErr(c.Raw().BatchEnqueue(bg, func(p schema.NodeService_batchEnqueue_Params) error {
				p.SetVersion(0)
				l, _ := p.NewRecipientKeys(1)
				l.Set(0, alice.id)
				return firstErr(p.SetPayload([]byte("x")), setAuth(p.NewAuth, c))
			})),
			"fetch": rawErr(c.Raw().Fetch(bg, func(p schema.NodeService_fetch_Params) error {
				p.SetVersion(2)
				return firstErr(p.SetRecipientKey(alice.id), setAuth(p.NewAuth, c))
			})),
			"fetchWait": rawErr(c.Raw().FetchWait(bg, func(p schema.NodeService_fetchWait_Params) error {
				p.SetVersion(2)
				return firstErr(p.SetRecipientKey(alice.id), setAuth(p.NewAuth, c))
			})),
			"peek": rawErr(c.Raw().Peek(bg, func(p schema.NodeService_peek_Params) error {
				p.SetVersion(2)
				return firstErr(p.SetRecipientKey(alice.id), setAuth(p.NewAuth, c))
			})),
			"ack": rawErr(c.Raw().Ack(bg, func(p schema.NodeService_ack_Params) error {
				p.SetVersion(65535)
				return firstErr(p.SetRecipientKey(alice.id), setAuth(p.NewAuth, c))
			})),
		} {
			wantCode(t, what+" with a bad version", err, errcode.InvalidArgument)
		}

		// Malformed OPAQUE messages and usernames.
		_, err := c.OpaqueRegisterStart(bg, "zed", []byte("not a request"))
		wantCode(t, "registerStart with garbage", err, errcode.InvalidArgument)
		_, err = c.OpaqueRegisterStart(bg, "", make([]byte, 32))
		wantCode(t, "registerStart with an empty username", err, errcode.InvalidArgument)
		wantCode(t, "registerFinish with garbage", c.OpaqueRegisterFinish(bg, "zed", []byte("junk"), randKey()), errcode.InvalidArgument)
		_, err = c.OpaqueLoginStart(bg, "zed", make([]byte, 96))
		wantCode(t, "loginStart with a zero KE1", err, errcode.InvalidArgument)
		_, err = c.OpaqueLoginStart(bg, strings.Repeat("z", 65), make([]byte, 96))
		wantCode(t, "loginStart with a long username", err, errcode.InvalidArgument)
		_, ke1, _ := pake.StartLogin([]byte("pw"))
		must[[]byte](t)(c.OpaqueLoginStart(bg, "zed", ke1))
		_, err = c.OpaqueLoginFinish(bg, "zed", []byte("short"), alice.id)
		wantCode(t, "loginFinish with a short KE3", err, errcode.InvalidArgument)
	})
}

func setAuth(newAuth func() (schema.Auth, error), c *rpc.Client) error {
	a, err := newAuth()
	if err != nil {
		return err
	}
	a.SetVersion(1)
	return a.SetAccessToken(c.Token())
}

// rawErr waits for a raw call and returns its error.
func rawErr[F interface {
	Struct() (S, error)
}, S any](f F, release func()) error {
	defer release()
	_, err := f.Struct()
	return err
}

func TestRateLimits(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("per token", func(t *testing.T) {
		s := startServer(t, Config{Rates: RateLimits{PerToken: Rate{PerSecond: 1, Burst: 3}}})
		alice := s.newUser("alice")
		for range 3 {
			if _, err := alice.c.ResolveUser(bg, "alice"); err != nil {
				t.Fatal(err)
			}
		}
		_, err := alice.c.ResolveUser(bg, "alice")
		wantCode(t, "fourth call within a second", err, errcode.ResourceExhausted)
		bob := s.newUser("bob") // same address, own token
		if _, err := bob.c.ResolveUser(bg, "alice"); err != nil {
			t.Fatalf("another token: %v", err)
		}
		s.clock.add(time.Second)
		if _, err := alice.c.ResolveUser(bg, "alice"); err != nil {
			t.Fatalf("after a second: %v", err)
		}
		if n := value(t, s.relay.m.rateLimited.WithLabelValues("token")); n != 1 {
			t.Fatalf("rate-limit metric = %v", n)
		}
	})
	t.Run("per address", func(t *testing.T) {
		s := startServer(t, Config{Rates: RateLimits{PerAddress: Rate{PerSecond: 1, Burst: 4}}})
		c := s.dial()
		for range 4 {
			if _, err := c.Health(bg); err != nil {
				t.Fatal(err)
			}
		}
		_, err := s.dial().Health(bg)
		wantCode(t, "fifth call from the address, on a new connection", err, errcode.ResourceExhausted)
	})
	t.Run("failed logins", func(t *testing.T) {
		s := startServer(t, Config{Rates: RateLimits{FailedLoginsPerUser: Rate{PerSecond: 1.0 / 60, Burst: 2}}})
		c := s.dial()
		ke1 := func() []byte { _, k, _ := pake.StartLogin([]byte("pw")); return k }
		// Each new start for the same username abandons the previous one,
		// which counts as a failure; so does a connection that hangs up.
		must[[]byte](t)(c.OpaqueLoginStart(bg, "victim", ke1()))
		must[[]byte](t)(c.OpaqueLoginStart(bg, "victim", ke1()))
		_, err := c.OpaqueLoginStart(bg, "victim", ke1())
		wantCode(t, "third unfinished login", err, errcode.ResourceExhausted)
		if _, err := c.OpaqueLoginStart(bg, "someone-else", ke1()); err != nil {
			t.Fatalf("another username: %v", err)
		}
		s.clock.add(time.Minute)
		if _, err := c.OpaqueLoginStart(bg, "victim", ke1()); err != nil {
			t.Fatalf("after refill: %v", err)
		}
	})
	t.Run("off", func(t *testing.T) {
		s := startServer(t, Config{Rates: RateLimits{Off: true, PerAddress: Rate{PerSecond: 1, Burst: 1}}})
		c := s.dial()
		for range 20 {
			if _, err := c.Health(bg); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestMetrics(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		s := startServer(t, Config{})
		alice, bob := s.newUser("alice"), s.newUser("bob")
		alice.c.Enqueue(bg, bob.id, nil, []byte("1"))
		alice.c.BatchEnqueue(bg, [][]byte{bob.id, alice.id}, nil, []byte("2"))
		if q := gauge(t, s, "qpq_relay_queued_messages"); q != 3 {
			t.Fatalf("queued = %v", q)
		}
		bob.c.Fetch(bg, bob.id, nil, 0)
		if n := value(t, s.relay.m.enqueued); n != 3 {
			t.Fatalf("enqueued = %v", n)
		}
		if n := value(t, s.relay.m.fetched); n != 2 {
			t.Fatalf("fetched = %v", n)
		}
		if n := value(t, s.relay.m.calls.WithLabelValues("enqueue", "ok")); n != 1 {
			t.Fatalf("enqueue calls = %v", n)
		}
		if q := gauge(t, s, "qpq_relay_queued_messages"); q != 1 {
			t.Fatalf("queued after fetch = %v", q)
		}
		// Registrations, logins, two enqueues and a fetch each waited
		// for a commit.
		commits, writes := gauge(t, s, "qpq_relay_store_commits_total"), gauge(t, s, "qpq_relay_store_commit_writes_total")
		if commits < 3 || writes < commits || gauge(t, s, "qpq_relay_store_commit_seconds_total") <= 0 {
			t.Fatalf("commit metrics: %v writes in %v commits", writes, commits)
		}
	})
}

// gauge reads a registered gauge or counter by name, as a scrape would.
func gauge(t *testing.T, s *testServer, name string) float64 {
	t.Helper()
	mfs, err := s.relay.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			if c := mf.GetMetric()[0].GetCounter(); c != nil {
				return c.GetValue()
			}
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// value reads a single counter or gauge.
func value(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestLogsHoldNoSecrets logs at debug level through a registration, a
// login and a message, and looks for the password, the token and the
// payload in every encoding a log line might use.
func TestLogsHoldNoSecrets(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		var logs syncBuffer
		logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		s := startServer(t, Config{Logger: logger})
		c := s.dial()
		id, _, _ := ed25519.GenerateKey(rand.Reader)
		password := []byte("hunter2-correct-horse")
		if err := c.Register(bg, "carol", password, id); err != nil {
			t.Fatal(err)
		}
		token, err := c.Login(bg, "carol", password, id)
		if err != nil {
			t.Fatal(err)
		}
		payload := []byte("attack at dawn, ciphertext or not")
		if _, err := c.Enqueue(bg, id, nil, payload); err != nil {
			t.Fatal(err)
		}
		c.Login(bg, "carol", []byte("wrong"), id) // a failure path too
		s.shutdown()
		out := logs.String()
		if !strings.Contains(out, "carol") {
			t.Fatalf("expected the registration in the logs; got:\n%s", out)
		}
		for name, secret := range map[string][]byte{"password": password, "token": token, "payload": payload} {
			for _, enc := range []string{string(secret), hex.EncodeToString(secret), base64.StdEncoding.EncodeToString(secret), fmt.Sprint(secret), fmt.Sprintf("%q", secret)} {
				if strings.Contains(out, enc) {
					t.Fatalf("the %s appears in the logs", name)
				}
			}
		}
	})
}
