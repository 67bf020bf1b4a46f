package auth

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quicproquo/qpq/relay/ratelimit"
	"github.com/quicproquo/qpq/relay/store"
	"github.com/quicproquo/qpq/rpc/errcode"
	"github.com/quicproquo/qpq/rpc/pake"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newAccounts(t testing.TB, dir string, cfg Config) *Accounts {
	t.Helper()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	a, err := New(st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func identity() store.Key {
	var k store.Key
	rand.Read(k[:])
	return k
}

func register(t testing.TB, a *Accounts, name, password string, id store.Key) {
	t.Helper()
	reg, req, err := pake.StartRegistration([]byte(password))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := a.RegisterStart(name, "addr", req)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := reg.Finish(resp)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.RegisterFinish(name, rec, id); err != nil {
		t.Fatal(err)
	}
}

// login runs a login; it returns the token, or the error of the side that
// refused (client: wrong password; server: anything else).
func login(a *Accounts, name, password string, id store.Key) ([]byte, error) {
	l, ke1, err := pake.StartLogin([]byte(password))
	if err != nil {
		return nil, err
	}
	p, ke2, err := a.LoginStart(name, "addr", ke1)
	if err != nil {
		return nil, err
	}
	ke3, err := l.Finish(ke2)
	if err != nil {
		p.Abandon()
		return nil, err
	}
	return p.Finish(ke3, id)
}

func code(err error) errcode.Code { return errcode.Of(err) }

func TestRegisterLoginAuthenticate(t *testing.T) {
	c := &clock{t: time.Unix(1_000_000, 0)}
	dir := t.TempDir()
	a := newAccounts(t, dir, Config{Now: c.now, TokenLifetime: time.Hour})
	alice := identity()
	register(t, a, "alice", "correct horse", alice)

	token, err := login(a, "alice", "correct horse", alice)
	if err != nil {
		t.Fatal(err)
	}
	if len(token) != TokenSize {
		t.Fatalf("token of %d bytes", len(token))
	}
	s, err := a.Authenticate(token)
	if err != nil || s.Identity != alice {
		t.Fatalf("authenticate = %+v, %v", s, err)
	}
	if strings.Contains(s.ID, string(token)) {
		t.Fatal("session id reveals the token")
	}

	// Tokens survive a restart: a new Accounts over the same data.
	a2 := newAccounts(t, t.TempDir(), Config{Now: c.now})
	if _, err := a2.Authenticate(token); code(err) != errcode.Unauthenticated {
		t.Fatalf("token accepted by another server: %v", err)
	}

	c.add(time.Hour)
	if _, err := a.Authenticate(token); code(err) != errcode.Unauthenticated || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired token: %v", err)
	}
	if n, err := a.DeleteExpired(); n != 1 || err != nil {
		t.Fatalf("DeleteExpired = %d, %v", n, err)
	}
}

func TestTokensSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(st, Config{})
	if err != nil {
		t.Fatal(err)
	}
	id := identity()
	register(t, a, "bob", "pw", id)
	token, err := login(a, "bob", "pw", id)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()

	a = newAccounts(t, dir, Config{})
	if s, err := a.Authenticate(token); err != nil || s.Identity != id {
		t.Fatalf("after restart: %+v, %v", s, err)
	}
	// And the OPAQUE keys survived too: the same password still logs in.
	if _, err := login(a, "bob", "pw", id); err != nil {
		t.Fatalf("login after restart: %v", err)
	}
}

func TestLoginFailures(t *testing.T) {
	a := newAccounts(t, t.TempDir(), Config{})
	alice := identity()
	register(t, a, "alice", "pw", alice)

	if _, err := login(a, "alice", "wrong", alice); !errors.Is(err, pake.ErrWrongPassword) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := login(a, "nobody", "pw", alice); !errors.Is(err, pake.ErrWrongPassword) {
		t.Fatalf("unknown user: %v", err)
	}
	if _, err := login(a, "alice", "pw", identity()); code(err) != errcode.PermissionDenied {
		t.Fatalf("foreign identity: %v", err)
	}
	// A client that skips its own check and sends a KE3 anyway is refused
	// by the server.
	_, ke1, _ := pake.StartLogin([]byte("pw"))
	p, _, err := a.LoginStart("nobody", "addr", ke1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Finish(bytes.Repeat([]byte{1}, 64), alice); code(err) != errcode.Unauthenticated {
		t.Fatalf("forged KE3: %v", err)
	}
}

func TestUnknownUserKE2LooksReal(t *testing.T) {
	a := newAccounts(t, t.TempDir(), Config{})
	register(t, a, "alice", "pw", identity())
	_, ke1, _ := pake.StartLogin([]byte("pw"))
	_, real, err := a.LoginStart("alice", "addr", ke1)
	if err != nil {
		t.Fatal(err)
	}
	_, fake, err := a.LoginStart("mallory", "addr", ke1)
	if err != nil {
		t.Fatal(err)
	}
	if len(real) != len(fake) || len(fake) != 320 {
		t.Fatalf("KE2 sizes: real %d, fake %d", len(real), len(fake))
	}
	conf := pake.Configuration()
	d, _ := conf.Deserializer()
	if _, err := d.KE2(fake); err != nil {
		t.Fatalf("fake KE2 does not parse as a KE2: %v", err)
	}
	// The fake record is stable per username, like a real one.
	r1, r2 := a.fakeRecord("mallory"), a.fakeRecord("mallory")
	if !r1.ClientPublicKey.Equal(r2.ClientPublicKey) || !bytes.Equal(r1.MaskingKey, r2.MaskingKey) {
		t.Fatal("fake record changes between logins")
	}
	if r3 := a.fakeRecord("eve"); r3.ClientPublicKey.Equal(r1.ClientPublicKey) {
		t.Fatal("two unknown usernames share a fake record")
	}
}

func TestLoginExpires(t *testing.T) {
	c := &clock{t: time.Unix(1_000_000, 0)}
	a := newAccounts(t, t.TempDir(), Config{Now: c.now, LoginTTL: time.Minute})
	id := identity()
	register(t, a, "alice", "pw", id)
	l, ke1, _ := pake.StartLogin([]byte("pw"))
	p, ke2, err := a.LoginStart("alice", "addr", ke1)
	if err != nil {
		t.Fatal(err)
	}
	ke3, err := l.Finish(ke2)
	if err != nil {
		t.Fatal(err)
	}
	c.add(time.Minute)
	if _, err := p.Finish(ke3, id); code(err) != errcode.FailedPrecondition {
		t.Fatalf("finish after TTL: %v", err)
	}
}

func TestFailedLoginsLimited(t *testing.T) {
	c := &clock{t: time.Unix(1_000_000, 0)}
	perUser := ratelimit.New(1.0/60, 4, c.now)
	perAddr := ratelimit.New(1.0/60, 7, c.now)
	a := newAccounts(t, t.TempDir(), Config{Now: c.now, FailedLoginsPerUser: perUser, FailedLoginsPerAddr: perAddr})
	id := identity()
	register(t, a, "alice", "pw", id) // registerStart spends one of 4 (and of 7)
	for range 3 {                     // successes are free
		if _, err := login(a, "alice", "pw", id); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if _, err := login(a, "alice", "bad", id); !errors.Is(err, pake.ErrWrongPassword) {
			t.Fatalf("failure %d: %v", i, err)
		}
	}
	if _, err := login(a, "alice", "pw", id); code(err) != errcode.ResourceExhausted {
		t.Fatalf("login after 3 failures: %v", err)
	}
	// Another username from the same address still works until the
	// address's budget (7) is spent too.
	register(t, a, "bob", "pw", identity())
	for range 2 {
		login(a, "bob", "bad", id)
	}
	if _, err := login(a, "bob", "pw", id); code(err) != errcode.ResourceExhausted {
		t.Fatalf("login after the address's budget is spent: %v", err)
	}
	c.add(time.Minute)
	if _, err := login(a, "alice", "pw", id); err != nil {
		t.Fatalf("after refill: %v", err)
	}
	// Registration answers spend the same budget: they evaluate the OPRF
	// under the username's key (a guessing oracle otherwise).
	_, req, _ := pake.StartRegistration([]byte("guess"))
	for i := range 4 {
		if _, err := a.RegisterStart("not-yet-taken", "elsewhere", req); err != nil {
			t.Fatalf("registerStart %d: %v", i, err)
		}
	}
	if _, err := a.RegisterStart("not-yet-taken", "elsewhere", req); code(err) != errcode.ResourceExhausted {
		t.Fatalf("fifth registerStart for one username: %v", err)
	}
}

func TestRegistrationErrors(t *testing.T) {
	a := newAccounts(t, t.TempDir(), Config{})
	id := identity()
	register(t, a, "alice", "pw", id)
	reg, req, _ := pake.StartRegistration([]byte("pw2"))
	if _, err := a.RegisterStart("alice", "addr", req); code(err) != errcode.AlreadyExists {
		t.Fatalf("registerStart for a taken username (an OPRF oracle): %v", err)
	}
	resp, _ := a.RegisterStart("alice-too", "addr", req)
	rec, _ := reg.Finish(resp)
	// Registered meanwhile by someone else: finish refuses too.
	register(t, a, "alice-too", "other", identity())
	if err := a.RegisterFinish("alice-too", rec, identity()); code(err) != errcode.AlreadyExists {
		t.Fatalf("taken username at finish: %v", err)
	}
	if err := a.RegisterFinish("carol", rec, id); code(err) != errcode.AlreadyExists {
		t.Fatalf("taken identity: %v", err)
	}
	for _, bad := range []string{"", " a", "a ", "a\x00b", "a\nb", string([]byte{0xff}), strings.Repeat("x", 65)} {
		if _, err := a.RegisterStart(bad, "addr", req); code(err) != errcode.InvalidArgument {
			t.Errorf("username %q: %v", bad, err)
		}
	}
	if _, err := a.RegisterStart("ok", "addr", []byte("short")); code(err) != errcode.InvalidArgument {
		t.Fatalf("bad request: %v", err)
	}
	if err := a.RegisterFinish("ok", make([]byte, 192), id); code(err) != errcode.InvalidArgument {
		t.Fatalf("zero record: %v", err)
	}
}

func TestAuthenticateRejects(t *testing.T) {
	a := newAccounts(t, t.TempDir(), Config{})
	for name, tok := range map[string][]byte{"missing": nil, "short": {1, 2}, "unknown": bytes.Repeat([]byte{7}, TokenSize)} {
		if _, err := a.Authenticate(tok); code(err) != errcode.Unauthenticated {
			t.Errorf("%s token: %v", name, err)
		}
	}
}

// TestSessionCache: a connection's cache answers the token it accepted
// as the store would: the same session, an expired token refused, a
// token evicted by later logins or swept refused on the very next call,
// and any other token looked up, never answered from the entry.
func TestSessionCache(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	st, err := store.Open(t.TempDir(), store.Options{MaxSessions: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	a, err := New(st, Config{Now: c.now, TokenLifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	id := identity()
	issue := func() []byte {
		// Sessions beyond the cap go oldest expiry first; tokens issued
		// at one instant would go in selector order.
		c.add(time.Second)
		tok, err := a.IssueToken(id)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	tok := issue()
	cache := a.NewSessionCache()
	want, err := a.Authenticate(tok)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if s, err := cache.Authenticate(tok); err != nil || s != want {
			t.Fatalf("cached authenticate = %+v, %v; want %+v", s, err, want)
		}
	}
	// Another token, valid or not, is looked up, not matched to the entry.
	other := bytes.Clone(tok)
	other[0] ^= 1
	if _, err := cache.Authenticate(other); code(err) != errcode.Unauthenticated {
		t.Fatalf("a different token: %v", err)
	}
	if _, err := cache.Authenticate(tok[:TokenSize-1]); code(err) != errcode.Unauthenticated {
		t.Fatalf("a prefix of the token: %v", err)
	}

	// Two later logins push tok out (two sessions per identity here).
	cache.Authenticate(tok)
	issue()
	if _, err := cache.Authenticate(tok); err != nil {
		t.Fatalf("still within the cap: %v", err)
	}
	issue()
	if _, err := cache.Authenticate(tok); code(err) != errcode.Unauthenticated {
		t.Fatalf("an evicted token answered from the cache: %v", err)
	}

	// Expiry is checked on a hit, and a sweep drops the entry.
	fresh := issue()
	if _, err := cache.Authenticate(fresh); err != nil {
		t.Fatal(err)
	}
	c.add(time.Hour)
	if _, err := cache.Authenticate(fresh); code(err) != errcode.Unauthenticated || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("an expired token: %v", err)
	}
	epoch := st.TokenEpoch()
	if n, err := a.DeleteExpired(); err != nil || n == 0 {
		t.Fatalf("sweep: %d, %v", n, err)
	}
	if st.TokenEpoch() == epoch {
		t.Fatal("a sweep that deleted tokens left the epoch unchanged")
	}
}
