package store

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/quicproquo/qpq/internal/chanid"
)

func key(b byte) Key {
	var k Key
	for i := range k {
		k[i] = b
	}
	return k
}

func open(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func enqueue1(t *testing.T, s *Store, from, to Key, ch ChannelID, payload string) uint64 {
	t.Helper()
	seqs, err := s.Enqueue(from, []Key{to}, ch, []byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	return seqs[0]
}

func TestSeqNeverReused(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	s := open(t, dir, Options{})
	alice, bob := key(1), key(2)
	in := Inbox{Recipient: bob}
	for i := 1; i <= 3; i++ {
		if seq := enqueue1(t, s, alice, bob, ChannelID{}, fmt.Sprint("m", i)); seq != uint64(i) {
			t.Fatalf("seq %d, want %d", seq, i)
		}
	}
	got, err := s.Fetch(in, 0, 1<<20)
	if err != nil || len(got) != 3 || string(got[2].Data) != "m3" || got[0].Seq != 1 {
		t.Fatalf("fetch = %v, %v", got, err)
	}
	if seq := enqueue1(t, s, alice, bob, ChannelID{}, "m4"); seq != 4 {
		t.Fatalf("after drain: seq %d, want 4", seq)
	}
	if n, err := s.Ack(in, 4); err != nil || n != 1 {
		t.Fatalf("ack = %d, %v", n, err)
	}
	s.Close()

	s = open(t, dir, Options{})
	if seq := enqueue1(t, s, alice, bob, ChannelID{}, "m5"); seq != 5 {
		t.Fatalf("after restart: seq %d, want 5", seq)
	}
	if s.Queued() != 1 {
		t.Fatalf("queued = %d, want 1", s.Queued())
	}
	s.Close()
}

func TestInboxesAreSeparate(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	alice, bob := key(1), key(2)
	ch, _, err := s.CreateChannel(alice, bob)
	if err != nil {
		t.Fatal(err)
	}
	enqueue1(t, s, alice, bob, ChannelID{}, "default")
	if seq := enqueue1(t, s, alice, bob, ch, "channel"); seq != 1 {
		t.Fatalf("channel inbox starts at %d", seq)
	}
	got, _ := s.Fetch(Inbox{Recipient: bob}, 0, 1<<20)
	if len(got) != 1 || string(got[0].Data) != "default" {
		t.Fatalf("default inbox = %v", got)
	}
	got, _ = s.Fetch(Inbox{Recipient: bob, Channel: ch}, 0, 1<<20)
	if len(got) != 1 || string(got[0].Data) != "channel" {
		t.Fatalf("channel inbox = %v", got)
	}
}

func TestFetchLimits(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	a, b := key(1), key(2)
	for i := 0; i < 10; i++ {
		enqueue1(t, s, a, b, ChannelID{}, "0123456789")
	}
	in := Inbox{Recipient: b}
	if got, _ := s.Peek(in, 3, 1<<20); len(got) != 3 || got[0].Seq != 1 {
		t.Fatalf("peek limit 3 = %d", len(got))
	}
	if got, _ := s.Fetch(in, 0, 25); len(got) != 2 {
		t.Fatalf("fetch with 25-byte cap = %d messages, want 2", len(got))
	}
	if got, _ := s.Fetch(in, 0, 5); len(got) != 1 || got[0].Seq != 3 {
		t.Fatalf("fetch with a cap below one message = %v, want exactly seq 3", got)
	}
	if got, _ := s.Fetch(in, 4, 1<<20); len(got) != 4 || got[3].Seq != 7 {
		t.Fatalf("fetch limit 4 = %v", got)
	}
	if n, _ := s.Ack(in, 8); n != 1 {
		t.Fatalf("ack 8 removed %d", n)
	}
	got, _ := s.Peek(in, 0, 1<<20)
	if len(got) != 2 || got[0].Seq != 9 {
		t.Fatalf("left = %v", got)
	}
	if _, depth, _ := s.InboxState(in); depth != 2 {
		t.Fatalf("depth %d", depth)
	}
}

func TestInboxFull(t *testing.T) {
	s := open(t, t.TempDir(), Options{MaxInboxDepth: 2})
	a, b := key(1), key(2)
	enqueue1(t, s, a, b, ChannelID{}, "1")
	enqueue1(t, s, a, b, ChannelID{}, "2")
	if _, err := s.Enqueue(a, []Key{b}, ChannelID{}, []byte("3")); !errors.Is(err, ErrInboxFull) {
		t.Fatalf("third enqueue: %v", err)
	}
	// A batch touching a full inbox changes nothing.
	if _, err := s.Enqueue(a, []Key{key(3), b}, ChannelID{}, []byte("x")); !errors.Is(err, ErrInboxFull) {
		t.Fatalf("batch: %v", err)
	}
	if last, _, _ := s.InboxState(Inbox{Recipient: key(3)}); last != 0 {
		t.Fatalf("batch half-applied: seq %d", last)
	}
}

func TestChannelMembership(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	a, b, c := key(1), key(2), key(3)
	ch, _, _ := s.CreateChannel(a, b)
	if _, err := s.Enqueue(c, []Key{b}, ch, []byte("x")); !errors.Is(err, ErrNotChannelMember) {
		t.Fatalf("outsider: %v", err)
	}
	if _, err := s.Enqueue(a, []Key{c}, ch, []byte("x")); !errors.Is(err, ErrNotChannelMember) {
		t.Fatalf("to outsider: %v", err)
	}
	if _, err := s.Enqueue(a, []Key{a}, ch, []byte("x")); !errors.Is(err, ErrNotChannelMember) {
		t.Fatalf("to self: %v", err)
	}
	if _, err := s.Enqueue(a, []Key{b}, ChannelID{9}, []byte("x")); !errors.Is(err, ErrChannelNotFound) {
		t.Fatalf("unknown channel: %v", err)
	}
	if _, _, err := s.CreateChannel(a, a); !errors.Is(err, ErrSameIdentity) {
		t.Fatalf("self channel: %v", err)
	}
}

func TestCreateChannelRace(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	for round := 0; round < 20; round++ {
		a, b := key(byte(2*round+1)), key(byte(2*round+2))
		const n = 8
		var wg sync.WaitGroup
		created := make([]bool, n)
		ids := make([]ChannelID, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				x, y := a, b
				if i%2 == 1 {
					x, y = b, a
				}
				id, c, err := s.CreateChannel(x, y)
				if err != nil {
					t.Error(err)
				}
				ids[i], created[i] = id, c
			}()
		}
		wg.Wait()
		nNew := 0
		for i := range n {
			if created[i] {
				nNew++
			}
			if ids[i] != ChannelID(chanid.Derive(a[:], b[:])) {
				t.Fatalf("id %x is not chanid.Derive", ids[i])
			}
		}
		if nNew != 1 {
			t.Fatalf("round %d: %d callers got created=true", round, nNew)
		}
	}
}

func TestKeyPackagesPopOnce(t *testing.T) {
	s := open(t, t.TempDir(), Options{MaxKeyPackages: 50})
	id := key(7)
	for i := range 50 {
		if err := s.PutKeyPackage(id, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutKeyPackage(id, []byte{0xff}); !errors.Is(err, ErrTooManyKeyPackages) {
		t.Fatalf("51st package: %v", err)
	}
	var mu sync.Mutex
	seen := map[byte]int{}
	var wg sync.WaitGroup
	for range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := s.PopKeyPackage(id)
			if err != nil {
				t.Error(err)
				return
			}
			if p != nil {
				mu.Lock()
				seen[p[0]]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != 50 {
		t.Fatalf("%d distinct packages popped, want 50", len(seen))
	}
	for p, n := range seen {
		if n != 1 {
			t.Fatalf("package %d popped %d times", p, n)
		}
	}
	if p, err := s.PopKeyPackage(id); p != nil || err != nil {
		t.Fatalf("empty pop = %v, %v", p, err)
	}
}

func TestKeyPackagesOldestFirst(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	id := key(7)
	for _, p := range []string{"a", "b", "c"} {
		s.PutKeyPackage(id, []byte(p))
	}
	for _, want := range []string{"a", "b", "c"} {
		if p, _ := s.PopKeyPackage(id); string(p) != want {
			t.Fatalf("pop = %q, want %q", p, want)
		}
	}
}

// The last-resort package is handed out only once the queue is empty,
// every time, without being removed; a newer one replaces it, and it
// survives a restart.
func TestLastResortKeyPackage(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	id, other := key(7), key(8)
	if err := s.PutLastResortKeyPackage(id, []byte("last-1")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutLastResortKeyPackage(id, []byte("last-2")); err != nil {
		t.Fatal(err)
	}
	s.PutKeyPackage(id, []byte("a"))
	s.PutKeyPackage(id, []byte("b"))
	for _, want := range []string{"a", "b", "last-2", "last-2"} {
		if p, err := s.PopKeyPackage(id); err != nil || string(p) != want {
			t.Fatalf("pop = %q, %v; want %q", p, err, want)
		}
	}
	if n, _ := s.KeyPackageCount(id); n != 0 {
		t.Fatalf("count = %d; the last-resort package is not in the stock", n)
	}
	if p, err := s.PopKeyPackage(other); p != nil || err != nil {
		t.Fatalf("another identity's pop = %q, %v", p, err)
	}
	s.Close()
	s = open(t, dir, Options{})
	if p, err := s.PopKeyPackage(id); err != nil || string(p) != "last-2" {
		t.Fatalf("after a restart: %q, %v", p, err)
	}
}

func TestUsers(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	rec := bytes.Repeat([]byte{5}, 192)
	if err := s.CreateUser("alice", User{Identity: key(1), Record: rec}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser("alice", User{Identity: key(2), Record: rec}); !errors.Is(err, ErrUsernameTaken) {
		t.Fatalf("taken name: %v", err)
	}
	if err := s.CreateUser("bob", User{Identity: key(1), Record: rec}); !errors.Is(err, ErrIdentityTaken) {
		t.Fatalf("taken identity: %v", err)
	}
	u, ok, err := s.User("alice")
	if err != nil || !ok || u.Identity != key(1) || !bytes.Equal(u.Record, rec) {
		t.Fatalf("user = %+v %v %v", u, ok, err)
	}
	if name, ok, _ := s.Username(key(1)); !ok || name != "alice" {
		t.Fatalf("username = %q %v", name, ok)
	}
	if _, ok, _ := s.User("bob"); ok {
		t.Fatal("bob exists")
	}
}

func TestTokens(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	s := open(t, t.TempDir(), Options{MaxSessions: 2, Now: func() time.Time { return now }})
	id := key(1)
	sel := func(b byte) [SelectorSize]byte { return [SelectorSize]byte{b} }
	for i := byte(1); i <= 3; i++ {
		if err := s.PutToken(sel(i), Token{Identity: id, Expiry: now.Add(time.Duration(i) * time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok, _ := s.Token(sel(1)); ok {
		t.Fatal("the session expiring first was not dropped beyond MaxSessions")
	}
	if tk, ok, _ := s.Token(sel(3)); !ok || tk.Identity != id || !tk.Expiry.Equal(now.Add(3*time.Hour)) {
		t.Fatalf("token 3 = %+v %v", tk, ok)
	}
	n, err := s.DeleteExpiredTokens(now.Add(2 * time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("expired deleted %d, %v", n, err)
	}
	if _, ok, _ := s.Token(sel(2)); ok {
		t.Fatal("expired token kept")
	}
	if _, ok, _ := s.Token(sel(3)); !ok {
		t.Fatal("live token deleted")
	}
}

func TestEndpointsAndHybridKeys(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	at := time.Unix(42, 0)
	if err := s.PutEndpoint(key(1), Endpoint{Published: at, NodeAddr: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	e, ok, err := s.Endpoint(key(1))
	if err != nil || !ok || !e.Published.Equal(at) || string(e.NodeAddr) != "{}" {
		t.Fatalf("endpoint = %+v %v %v", e, ok, err)
	}
	s.PutHybridKey(key(2), []byte("k2"))
	keys, err := s.HybridKeys(key(1), key(2))
	if err != nil || keys[0] != nil || string(keys[1]) != "k2" {
		t.Fatalf("hybrid keys = %q %v", keys, err)
	}
}

func TestSecretCreatedOnce(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	calls := 0
	gen := func() ([]byte, error) { calls++; return []byte{byte(calls)}, nil }
	a, _ := s.Secret("x", gen)
	b, _ := s.Secret("x", gen)
	s.Close()
	s = open(t, dir, Options{})
	c, _ := s.Secret("x", gen)
	if !bytes.Equal(a, b) || !bytes.Equal(a, c) || calls != 1 {
		t.Fatalf("secret %v %v %v after %d generations", a, b, c, calls)
	}
}

func TestWaitWakesOnCommit(t *testing.T) {
	defer goleak.VerifyNone(t)
	s := open(t, t.TempDir(), Options{})
	in := Inbox{Recipient: key(2)}
	wake, stop := s.Wait(in)
	defer stop()
	other, stopOther := s.Wait(Inbox{Recipient: key(3)})
	defer stopOther()
	enqueue1(t, s, key(1), key(2), ChannelID{}, "x")
	<-wake // blocks forever (test timeout) if the enqueue did not notify
	select {
	case <-other:
		t.Fatal("a waiter of another inbox was woken")
	default:
	}
	stop()
	stopOther()
	if n := s.hub.waiting(); n != 0 {
		t.Fatalf("%d waiters left after stop", n)
	}
	s.Close()
}

func TestClosedStore(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	s.Close()
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := s.Enqueue(key(1), []Key{key(2)}, ChannelID{}, []byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("enqueue after close: %v", err)
	}
}

func TestGroupCommitRetriesFailuresAlone(t *testing.T) {
	s := open(t, t.TempDir(), Options{MaxInboxDepth: 5})
	a, b := key(1), key(2)
	before := s.CommitStats()
	// Twenty concurrent enqueues into an inbox with room for five: the
	// failures are taken out of their shared commits and the others still
	// commit, with dense seqs.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok, full int
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Enqueue(a, []Key{b}, ChannelID{}, []byte("x"))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, ErrInboxFull):
				full++
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	last, depth, _ := s.InboxState(Inbox{Recipient: b})
	if ok != 5 || full != 15 || last != 5 || depth != 5 {
		t.Fatalf("%d committed, %d refused, last seq %d, depth %d", ok, full, last, depth)
	}
	// The stats count the five writes that committed, in one to five
	// commits; the refused ones were rolled back, not committed.
	st := s.CommitStats()
	commits, writes := st.Commits-before.Commits, st.Writes-before.Writes
	if writes != 5 || commits < 1 || commits > 5 || st.Time <= before.Time {
		t.Fatalf("commit stats: %d writes in %d commits, time %v → %v", writes, commits, before.Time, st.Time)
	}
}

func TestCloseWhileWriting(t *testing.T) {
	defer goleak.VerifyNone(t)
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, err := s.Enqueue(key(1), []Key{key(2)}, ChannelID{}, []byte("x")); err != nil {
					if !errors.Is(err, ErrClosed) {
						t.Error(err)
					}
					return
				}
			}
		}()
	}
	time.Sleep(10 * time.Millisecond) // let writes pile up
	s.Close()
	wg.Wait()
}

// TestOpenWhileInUse: a second Open of a data directory in use says so
// (after waiting a second for the lock) instead of reading a file that
// another process is writing.
func TestOpenWhileInUse(t *testing.T) {
	dir := t.TempDir()
	open(t, dir, Options{})
	if s, err := Open(dir, Options{}); !errors.Is(err, ErrInUse) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("second Open = %v, want ErrInUse", err)
	}
}
