package home

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/quicproquo/qpq/node/internal/nodetest"
	"github.com/quicproquo/qpq/rpc"
)

const waitLimit = 30 * time.Second

// leakCheck verifies, after every other cleanup, that the test leaked no
// goroutines.
func leakCheck(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// tsession is a Session under test and what it reported.
type tsession struct {
	s      *Session
	db     *bolt.DB
	id     ed25519.PublicKey
	mu     sync.Mutex
	pins   []bool // first flags
	got    [][]byte
	gotCh  chan struct{}
	logins chan *rpc.Client
	cancel context.CancelFunc
	done   chan error
}

func newSession(t *testing.T, srv *nodetest.Server, dir string, id ed25519.PublicKey, password string, failHandle func([]byte) error) *tsession {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, "node.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := &tsession{db: db, id: id, gotCh: make(chan struct{}, 1), logins: make(chan *rpc.Client, 8), done: make(chan error, 1)}
	ts.s, err = New(Config{
		Addr: srv.Addr, Username: "alice", Identity: id, DB: db,
		Password: func(context.Context) ([]byte, error) { return []byte(password), nil },
		OnPin: func(_ rpc.Fingerprint, first bool) {
			ts.mu.Lock()
			ts.pins = append(ts.pins, first)
			ts.mu.Unlock()
		},
		OnLogin: func(_ context.Context, c *rpc.Client) error { ts.logins <- c; return nil },
		Handle: func(_ context.Context, data []byte) error {
			if failHandle != nil {
				if err := failHandle(data); err != nil {
					return err
				}
			}
			ts.mu.Lock()
			ts.got = append(ts.got, data)
			ts.mu.Unlock()
			select {
			case ts.gotCh <- struct{}{}:
			default:
			}
			return nil
		},
		RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, PeekWait: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts.cancel = cancel
	go func() { ts.done <- ts.s.Run(ctx) }()
	t.Cleanup(func() { ts.stop(); db.Close() })
	return ts
}

func (ts *tsession) stop() error {
	if ts.cancel == nil {
		return nil
	}
	ts.cancel()
	ts.cancel = nil
	return <-ts.done
}

func (ts *tsession) waitLogin(t *testing.T) *rpc.Client {
	t.Helper()
	select {
	case c := <-ts.logins:
		return c
	case err := <-ts.done:
		ts.cancel = nil
		t.Fatalf("Run ended: %v", err)
	case <-time.After(waitLimit):
		t.Fatal("no login")
	}
	return nil
}

func (ts *tsession) waitGot(t *testing.T, n int) [][]byte {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		ts.mu.Lock()
		got := ts.got
		ts.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-ts.gotCh:
		case <-deadline:
			t.Fatalf("%d messages, want %d", len(got), n)
		}
	}
}

func newID() ed25519.PublicKey {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	return pub
}

// TestRegisterPinReadAck: the first session registers and pins; the inbox
// is read in order and acknowledged; the next session logs in with the
// pin; a reconnect after the server restarts reads what arrived meanwhile.
func TestRegisterPinReadAck(t *testing.T) {
	leakCheck(t)
	srv := nodetest.StartServer(t)
	dir, id := t.TempDir(), newID()

	ts := newSession(t, srv, dir, id, "correct horse", nil)
	c := ts.waitLogin(t)
	if fp, ok := ts.s.Pin(); !ok || fp != srv.FP {
		t.Fatalf("pinned %v (%v), server is %v", fp, ok, srv.FP)
	}
	for i := range 3 {
		if _, err := c.Enqueue(context.Background(), id, nil, []byte(fmt.Sprint("m", i))); err != nil {
			t.Fatal(err)
		}
	}
	got := ts.waitGot(t, 3)
	for i, g := range got {
		if string(g) != fmt.Sprint("m", i) {
			t.Fatalf("message %d is %q", i, g)
		}
	}

	srv.Stop()
	srv.Start()
	c = ts.waitLogin(t) // reconnected and logged in again
	if _, err := c.Enqueue(context.Background(), id, nil, []byte("m3")); err != nil {
		t.Fatal(err)
	}
	ts.waitGot(t, 4)
	if err := ts.stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	left, err := c.Peek(context.Background(), id, nil, 0)
	if err == nil && len(left) != 0 {
		t.Fatalf("%d messages left unacknowledged", len(left))
	}
	ts.mu.Lock()
	pins := fmt.Sprint(ts.pins)
	ts.mu.Unlock()
	if pins != "[true false]" {
		t.Fatalf("OnPin first flags %s, want [true false]", pins)
	}
}

// TestNotAckedUntilHandled: a message whose processing fails stays in the
// server's inbox and is read again.
func TestNotAckedUntilHandled(t *testing.T) {
	leakCheck(t)
	srv := nodetest.StartServer(t)
	id := newID()
	var mu sync.Mutex
	failures := 0
	ts := newSession(t, srv, t.TempDir(), id, "pw", func([]byte) error {
		mu.Lock()
		defer mu.Unlock()
		if failures < 2 {
			failures++
			return errors.New("disk full")
		}
		return nil
	})
	c := ts.waitLogin(t)
	// Sent on a connection of its own: the session drops its connection
	// when handling fails, which may come before this call's answer.
	conn, err := rpc.Dial(context.Background(), srv.Addr, rpc.DialOptions{Pin: srv.FP})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Client().SetToken(c.Token())
	if _, err := conn.Client().Enqueue(context.Background(), id, nil, []byte("kept")); err != nil {
		t.Fatal(err)
	}
	if got := ts.waitGot(t, 1); string(got[0]) != "kept" {
		t.Fatalf("got %q", got[0])
	}
}

// TestPinMismatchEndsRun: another server on the pinned address is refused.
func TestPinMismatchEndsRun(t *testing.T) {
	leakCheck(t)
	srv := nodetest.StartServer(t)
	dir, id := t.TempDir(), newID()
	ts := newSession(t, srv, dir, id, "pw", nil)
	ts.waitLogin(t)
	ts.stop()
	ts.db.Close()

	srv.Stop()
	addr := srv.Addr
	srv.Dir = t.TempDir() // a new certificate
	srv.Start()
	if srv.Addr != addr {
		t.Fatalf("server moved to %s", srv.Addr)
	}
	ts = newSession(t, srv, dir, id, "pw", nil)
	select {
	case err := <-ts.done:
		ts.cancel = nil
		if !errors.Is(err, ErrPinMismatch) {
			t.Fatalf("Run: %v, want ErrPinMismatch", err)
		}
	case <-ts.logins:
		t.Fatal("logged in to a server with another certificate")
	case <-time.After(waitLimit):
		t.Fatal("Run did not end")
	}
}

// TestWrongPasswordEndsRun: a wrong password is ErrLogin, not a retry loop.
func TestWrongPasswordEndsRun(t *testing.T) {
	leakCheck(t)
	srv := nodetest.StartServer(t)
	dir, id := t.TempDir(), newID()
	ts := newSession(t, srv, dir, id, "right", nil)
	ts.waitLogin(t)
	ts.stop()
	ts.db.Close()
	ts = newSession(t, srv, dir, id, "wrong", nil)
	select {
	case err := <-ts.done:
		ts.cancel = nil
		if !errors.Is(err, ErrLogin) {
			t.Fatalf("Run: %v, want ErrLogin", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Run did not end")
	}
}
