package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"sync"
	"testing"
	"time"

	"github.com/quicproquo/qpq/relay/store"
	"github.com/quicproquo/qpq/rpc"
	"github.com/quicproquo/qpq/rpc/errcode"
)

// clock is a settable clock for token, login and endpoint expiry.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_700_000_000, 0)} }

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// testServer is a real home server on loopback: QUIC, Cap'n Proto RPC and
// bbolt in a temporary directory.
type testServer struct {
	t     *testing.T
	cfg   Config
	clock *clock
	relay *Relay
	addr  string
	fp    rpc.Fingerprint
	stop  func()
}

func startServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	s := &testServer{t: t, cfg: cfg, clock: newClock()}
	if s.cfg.Now == nil {
		s.cfg.Now = s.clock.now
	}
	s.start()
	t.Cleanup(s.shutdown)
	return s
}

func (s *testServer) start() {
	s.t.Helper()
	r, err := Open(s.cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	cert, err := rpc.LoadOrCreateCertificate(s.cfg.DataDir)
	if err != nil {
		r.Close()
		s.t.Fatal(err)
	}
	addr := "127.0.0.1:0"
	if s.addr != "" {
		addr = s.addr // a restart keeps the address
	}
	ln, err := rpc.Listen(addr, cert, rpc.ListenOptions{})
	if err != nil {
		r.Close()
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, ln) }()
	s.relay, s.addr, s.fp = r, ln.Addr().String(), rpc.CertificateFingerprint(cert)
	s.stop = func() {
		cancel()
		if err := <-done; err != nil {
			s.t.Errorf("Serve: %v", err)
		}
		if err := r.Close(); err != nil {
			s.t.Errorf("Close: %v", err)
		}
	}
}

func (s *testServer) shutdown() {
	if s.stop != nil {
		s.stop()
		s.stop = nil
	}
}

// restart stops the server and starts it again on the same data.
func (s *testServer) restart() {
	s.shutdown()
	s.start()
}

// dial returns a client on a new connection, closed at the end of the test.
func (s *testServer) dial() *rpc.Client {
	s.t.Helper()
	c, err := rpc.Dial(context.Background(), s.addr, rpc.DialOptions{Pin: s.fp})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { c.Close() })
	return c.Client()
}

type user struct {
	name string
	id   []byte
	priv ed25519.PrivateKey
	c    *rpc.Client
}

func (u *user) key() store.Key { return store.Key(u.id) }

// newUser makes an account and a logged-in client for it. The session is
// issued directly (a login runs Argon2id, which is slow under -race);
// OPAQUE itself is exercised by the login tests.
func (s *testServer) newUser(name string) *user {
	s.t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	u := &user{name: name, id: pub, priv: priv, c: s.dial()}
	if err := s.relay.st.CreateUser(name, store.User{Identity: u.key(), Record: bytes.Repeat([]byte{1}, 192)}); err != nil {
		s.t.Fatal(err)
	}
	tok, err := s.relay.accounts.IssueToken(u.key())
	if err != nil {
		s.t.Fatal(err)
	}
	u.c.SetToken(tok)
	return u
}

var bg = context.Background()

func wantCode(t *testing.T, what string, err error, code errcode.Code) {
	t.Helper()
	if got := errcode.Of(err); got != code {
		t.Fatalf("%s: got %v (code %q), want %s", what, err, got, code)
	}
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func randKey() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}
