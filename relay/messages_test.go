package relay

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/quicproquo/qpq/internal/smallfs"
	"github.com/quicproquo/qpq/rpc/errcode"
	"github.com/quicproquo/qpq/schema"
)

func TestEnqueueFetchSeq(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		s := startServer(t, Config{})
		alice, bob := s.newUser("alice"), s.newUser("bob")
		for i := 1; i <= 3; i++ {
			seq, err := alice.c.Enqueue(bg, bob.id, nil, []byte(fmt.Sprint("m", i)))
			if err != nil || seq != uint64(i) {
				t.Fatalf("enqueue %d: seq %d, %v", i, seq, err)
			}
		}
		got := must[[]rpcEnvelope](t)(fetchAll(bob, nil))
		if len(got) != 3 || got[0].Seq != 1 || string(got[2].Data) != "m3" {
			t.Fatalf("fetch = %v", got)
		}
		if again := must[[]rpcEnvelope](t)(fetchAll(bob, nil)); len(again) != 0 {
			t.Fatalf("fetch after drain = %v", again)
		}
		// After drain, ack and restart, seq continues.
		if seq := must[uint64](t)(alice.c.Enqueue(bg, bob.id, nil, []byte("m4"))); seq != 4 {
			t.Fatalf("after drain: seq %d", seq)
		}
		if err := bob.c.Ack(bg, bob.id, nil, 4); err != nil {
			t.Fatal(err)
		}
		tok := alice.c.Token()
		s.restart()
		alice.c, bob.c = s.dial(), s.dial()
		alice.c.SetToken(tok)
		if seq := must[uint64](t)(alice.c.Enqueue(bg, bob.id, nil, []byte("m5"))); seq != 5 {
			t.Fatalf("after ack and restart: seq %d", seq)
		}
	})
}

type rpcEnvelope = struct {
	Seq  uint64
	Data []byte
}

func fetchAll(u *user, ch []byte) ([]rpcEnvelope, error) {
	envs, err := u.c.Fetch(bg, u.id, ch, 0)
	out := make([]rpcEnvelope, len(envs))
	for i, e := range envs {
		out[i] = rpcEnvelope(e)
	}
	return out, err
}

func TestEnqueueRules(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		s := startServer(t, Config{Limits: Limits{MaxPayload: 100, MaxInboxDepth: 3}})
		alice, bob, carol := s.newUser("alice"), s.newUser("bob"), s.newUser("carol")

		_, err := alice.c.Enqueue(bg, bob.id, nil, nil)
		wantCode(t, "empty payload", err, errcode.InvalidArgument)
		_, err = alice.c.Enqueue(bg, bob.id, nil, make([]byte, 101))
		wantCode(t, "payload over the limit", err, errcode.ResourceExhausted)
		if _, err := alice.c.Enqueue(bg, bob.id, nil, make([]byte, 100)); err != nil {
			t.Fatalf("payload at the limit: %v", err)
		}

		// Channels: only created ones, only between their two members.
		ch, _, err := alice.c.CreateChannel(bg, bob.id)
		if err != nil {
			t.Fatal(err)
		}
		if seq, err := alice.c.Enqueue(bg, bob.id, ch, []byte("x")); err != nil || seq != 1 {
			t.Fatalf("channel enqueue: %d, %v", seq, err)
		}
		if seq, err := bob.c.Enqueue(bg, alice.id, ch, []byte("y")); err != nil || seq != 1 {
			t.Fatalf("channel reply: %d, %v", seq, err)
		}
		_, err = carol.c.Enqueue(bg, bob.id, ch, []byte("x"))
		wantCode(t, "outsider into a channel", err, errcode.PermissionDenied)
		_, err = alice.c.Enqueue(bg, carol.id, ch, []byte("x"))
		wantCode(t, "channel to an outsider", err, errcode.PermissionDenied)
		unknown := bytes.Repeat([]byte{0x42}, 16)
		_, err = alice.c.Enqueue(bg, bob.id, unknown, []byte("x"))
		wantCode(t, "unknown channel", err, errcode.NotFound)
		_, err = alice.c.Enqueue(bg, bob.id, make([]byte, 16), []byte("x"))
		wantCode(t, "all-zero channel", err, errcode.NotFound)
		_, err = alice.c.Enqueue(bg, bob.id, make([]byte, 15), []byte("x"))
		wantCode(t, "15-byte channel", err, errcode.InvalidArgument)

		// The channel inbox is separate from the default one.
		got := must[[]rpcEnvelope](t)(fetchAll(bob, ch))
		if len(got) != 1 || string(got[0].Data) != "x" {
			t.Fatalf("channel inbox = %v", got)
		}

		// Depth cap: bob's default inbox holds the 100-byte message; two more fit.
		alice.c.Enqueue(bg, bob.id, nil, []byte("2"))
		alice.c.Enqueue(bg, bob.id, nil, []byte("3"))
		_, err = alice.c.Enqueue(bg, bob.id, nil, []byte("4"))
		wantCode(t, "enqueue into a full inbox", err, errcode.ResourceExhausted)
		if n := len(must[[]rpcEnvelope](t)(fetchAll(bob, nil))); n != 3 {
			t.Fatalf("full inbox held %d", n)
		}
		if seq := must[uint64](t)(alice.c.Enqueue(bg, bob.id, nil, []byte("5"))); seq != 4 {
			t.Fatalf("after the full inbox drained: seq %d (a refused enqueue must not use a seq)", seq)
		}
	})
}

func TestOwnInboxOnly(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		s := startServer(t, Config{})
		alice, bob, carol := s.newUser("alice"), s.newUser("bob"), s.newUser("carol")
		alice.c.Enqueue(bg, bob.id, nil, []byte("for bob"))
		_, err := alice.c.Fetch(bg, bob.id, nil, 0)
		wantCode(t, "fetch of another's inbox", err, errcode.PermissionDenied)
		_, err = alice.c.FetchWait(bg, bob.id, nil, time.Millisecond, 0)
		wantCode(t, "fetchWait of another's inbox", err, errcode.PermissionDenied)
		_, err = alice.c.Peek(bg, bob.id, nil, 0)
		wantCode(t, "peek of another's inbox", err, errcode.PermissionDenied)
		_, err = alice.c.PeekWait(bg, bob.id, nil, time.Millisecond, 0)
		wantCode(t, "peekWait of another's inbox", err, errcode.PermissionDenied)
		wantCode(t, "ack of another's inbox", alice.c.Ack(bg, bob.id, nil, 10), errcode.PermissionDenied)

		ch, _, _ := alice.c.CreateChannel(bg, bob.id)
		_, err = carol.c.Fetch(bg, carol.id, ch, 0)
		wantCode(t, "fetch of a channel one is not in", err, errcode.PermissionDenied)
		_, err = carol.c.Fetch(bg, carol.id, bytes.Repeat([]byte{9}, 16), 0)
		wantCode(t, "fetch of an unknown channel", err, errcode.NotFound)
		if got, _ := bob.c.Peek(bg, bob.id, nil, 0); len(got) != 1 {
			t.Fatalf("bob's message was touched: %v", got)
		}
	})
}

func TestFetchPeekAck(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		s := startServer(t, Config{})
		alice, bob := s.newUser("alice"), s.newUser("bob")
		for i := range 6 {
			alice.c.Enqueue(bg, bob.id, nil, []byte{byte(i)})
		}
		p := must[[]rpcEnvelope](t)(func() ([]rpcEnvelope, error) {
			envs, err := bob.c.Peek(bg, bob.id, nil, 2)
			return conv(envs), err
		}())
		if len(p) != 2 || p[0].Seq != 1 || p[1].Seq != 2 {
			t.Fatalf("peek limit 2 = %v", p)
		}
		if all, _ := bob.c.Peek(bg, bob.id, nil, 0); len(all) != 6 {
			t.Fatalf("peek removed messages: %d left", len(all))
		}
		if err := bob.c.Ack(bg, bob.id, nil, 2); err != nil {
			t.Fatal(err)
		}
		f, err := bob.c.Fetch(bg, bob.id, nil, 3)
		if err != nil || len(f) != 3 || f[0].Seq != 3 || f[2].Seq != 5 {
			t.Fatalf("fetch limit 3 after ack 2 = %v, %v", f, err)
		}
		if err := bob.c.Ack(bg, bob.id, nil, 100); err != nil {
			t.Fatal(err)
		}
		if left, _ := bob.c.Peek(bg, bob.id, nil, 0); len(left) != 0 {
			t.Fatalf("after ack 100: %v", left)
		}
		if err := bob.c.Ack(bg, bob.id, nil, 0); err != nil {
			t.Fatalf("ack of an empty inbox: %v", err)
		}
	})
}

func conv[E ~struct {
	Seq  uint64
	Data []byte
}](in []E) []rpcEnvelope {
	out := make([]rpcEnvelope, len(in))
	for i, e := range in {
		out[i] = rpcEnvelope(e)
	}
	return out
}

func TestFetchReplySizeBound(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		s := startServer(t, Config{Limits: Limits{MaxPayload: 1000, MaxFetchBytes: 2500}})
		alice, bob := s.newUser("alice"), s.newUser("bob")
		for range 5 {
			alice.c.Enqueue(bg, bob.id, nil, make([]byte, 1000))
		}
		if got, _ := bob.c.Fetch(bg, bob.id, nil, 0); len(got) != 2 {
			t.Fatalf("first fetch returned %d messages of 1000 bytes under a 2500-byte bound", len(got))
		}
		total := 2
		for total < 5 {
			got, err := bob.c.Fetch(bg, bob.id, nil, 0)
			if err != nil || len(got) == 0 {
				t.Fatalf("fetch: %v, %v", got, err)
			}
			total += len(got)
		}
	})
}

func TestFetchWait(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		s := startServer(t, Config{MaxFetchWait: 200 * time.Millisecond, Limits: Limits{MaxWaitsPerConn: 2}})
		alice, bob := s.newUser("alice"), s.newUser("bob")

		// Messages waiting: returns them at once (an hour's timeout would
		// otherwise hang the test).
		alice.c.Enqueue(bg, bob.id, nil, []byte("early"))
		got, err := bob.c.FetchWait(bg, bob.id, nil, time.Hour, 0)
		if err != nil || len(got) != 1 || string(got[0].Data) != "early" {
			t.Fatalf("fetchWait with a message waiting = %v, %v", got, err)
		}

		// Nothing arrives: empty after the timeout, and the cap (200 ms
		// here) bounds an hour's request.
		if got, err := bob.c.FetchWait(bg, bob.id, nil, 10*time.Millisecond, 0); err != nil || len(got) != 0 {
			t.Fatalf("fetchWait timeout = %v, %v", got, err)
		}
		if got, err := bob.c.FetchWait(bg, bob.id, nil, time.Hour, 0); err != nil || len(got) != 0 {
			t.Fatalf("capped fetchWait = %v, %v", got, err)
		}
	})
	t.Run("wake", func(t *testing.T) {
		// A long cap, so the waiter can only return early by being woken.
		s := startServer(t, Config{Limits: Limits{MaxWaitsPerConn: 2}})
		alice, bob := s.newUser("alice"), s.newUser("bob")
		for i := range 3 {
			res := make(chan []rpcEnvelope, 1)
			go func() {
				got, err := bob.c.FetchWait(bg, bob.id, nil, time.Minute, 0)
				if err != nil {
					t.Error(err)
				}
				res <- conv(got)
			}()
			waitForWaiters(t, s, 1)
			payload := []byte(fmt.Sprint("wake ", i))
			alice.c.Enqueue(bg, bob.id, nil, payload)
			got := <-res
			if len(got) != 1 || !bytes.Equal(got[0].Data, payload) {
				t.Fatalf("woken fetchWait = %v", got)
			}
		}

		// The connection stays usable while a fetchWait waits, and more
		// than MaxWaitsPerConn at once are refused.
		done := make(chan error, 2)
		for range 2 {
			go func() { _, err := bob.c.FetchWait(bg, bob.id, nil, time.Minute, 0); done <- err }()
		}
		waitForWaiters(t, s, 2)
		_, err := bob.c.FetchWait(bg, bob.id, nil, time.Minute, 0)
		wantCode(t, "third fetchWait on a connection", err, errcode.ResourceExhausted)
		if _, err := bob.c.Health(bg); err != nil {
			t.Fatalf("health while two fetchWaits wait: %v", err)
		}
		// One message wakes both; one gets it, the other waits on.
		alice.c.Enqueue(bg, bob.id, nil, []byte("one"))
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		alice.c.Enqueue(bg, bob.id, nil, []byte("two"))
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// TestPeekWait: the non-destructive long-poll returns waiting messages at
// once, is woken by an enqueue, times out empty, and never removes anything
// (ack does), so a reader that crashes after reading loses nothing.
func TestPeekWait(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		s := startServer(t, Config{MaxFetchWait: 200 * time.Millisecond, Limits: Limits{MaxWaitsPerConn: 1}})
		alice, bob := s.newUser("alice"), s.newUser("bob")

		if got, err := bob.c.PeekWait(bg, bob.id, nil, 10*time.Millisecond, 0); err != nil || len(got) != 0 {
			t.Fatalf("peekWait on an empty inbox = %v, %v", got, err)
		}
		if got, err := bob.c.PeekWait(bg, bob.id, nil, time.Hour, 0); err != nil || len(got) != 0 {
			t.Fatalf("capped peekWait = %v, %v", got, err)
		}

		res := make(chan []rpcEnvelope, 1)
		go func() {
			got, err := bob.c.PeekWait(bg, bob.id, nil, time.Minute, 0)
			if err != nil {
				t.Error(err)
			}
			res <- conv(got)
		}()
		waitForWaiters(t, s, 1)
		// The waiting call counts against the same per-connection limit.
		_, err := bob.c.FetchWait(bg, bob.id, nil, time.Minute, 0)
		wantCode(t, "fetchWait beside a peekWait over the limit", err, errcode.ResourceExhausted)
		alice.c.Enqueue(bg, bob.id, nil, []byte("one"))
		if got := <-res; len(got) != 1 || string(got[0].Data) != "one" || got[0].Seq != 1 {
			t.Fatalf("woken peekWait = %v", got)
		}

		// Nothing was removed: the next peekWait returns it again at once,
		// together with a newer one, in seq order, honouring the limit.
		alice.c.Enqueue(bg, bob.id, nil, []byte("two"))
		got, err := bob.c.PeekWait(bg, bob.id, nil, time.Hour, 0)
		if err != nil || len(got) != 2 || got[0].Seq != 1 || got[1].Seq != 2 {
			t.Fatalf("second peekWait = %v, %v", conv(got), err)
		}
		if got, err := bob.c.PeekWait(bg, bob.id, nil, time.Hour, 1); err != nil || len(got) != 1 || got[0].Seq != 1 {
			t.Fatalf("peekWait limit 1 = %v, %v", conv(got), err)
		}
		if err := bob.c.Ack(bg, bob.id, nil, 1); err != nil {
			t.Fatal(err)
		}
		if got, err := bob.c.PeekWait(bg, bob.id, nil, time.Hour, 0); err != nil || len(got) != 1 || got[0].Seq != 2 {
			t.Fatalf("peekWait after ack = %v, %v", conv(got), err)
		}
	})
}

// waitForWaiters waits until n fetchWait calls are subscribed to inboxes.
func waitForWaiters(t *testing.T, s *testServer, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.relay.st.Waiting() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d waiters, want %d", s.relay.st.Waiting(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestBatchEnqueue(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		s := startServer(t, Config{Limits: Limits{MaxBatchRecipients: 3, MaxInboxDepth: 2}})
		alice, bob, carol := s.newUser("alice"), s.newUser("bob"), s.newUser("carol")
		alice.c.Enqueue(bg, carol.id, nil, []byte("first"))
		seqs, err := alice.c.BatchEnqueue(bg, [][]byte{carol.id, bob.id, carol.id}, nil, []byte("x"))
		wantCode(t, "batch overflowing carol's inbox", err, errcode.ResourceExhausted)
		if got, _ := bob.c.Peek(bg, bob.id, nil, 0); len(got) != 0 {
			t.Fatalf("failed batch left %d messages for bob: not one transaction", len(got))
		}
		seqs, err = alice.c.BatchEnqueue(bg, [][]byte{bob.id, carol.id, bob.id}, nil, []byte("x"))
		if err != nil || fmt.Sprint(seqs) != "[1 2 2]" {
			t.Fatalf("batch = %v, %v", seqs, err)
		}
		_, err = alice.c.BatchEnqueue(bg, [][]byte{bob.id, carol.id, bob.id, carol.id}, nil, []byte("x"))
		wantCode(t, "batch above the recipient limit", err, errcode.ResourceExhausted)
		_, err = alice.c.BatchEnqueue(bg, nil, nil, []byte("x"))
		wantCode(t, "batch without recipients", err, errcode.InvalidArgument)
		_, err = alice.c.BatchEnqueue(bg, [][]byte{bob.id, {1, 2}}, nil, []byte("x"))
		wantCode(t, "batch with a short key", err, errcode.InvalidArgument)
		_, err = alice.c.BatchEnqueue(bg, [][]byte{bob.id}, nil, nil)
		wantCode(t, "batch with an empty payload", err, errcode.InvalidArgument)
	})
}

func TestConcurrentEnqueuesKeepSeqsDense(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		s := startServer(t, Config{})
		bob := s.newUser("bob")
		const senders, each = 8, 25
		seen := make(map[uint64]bool)
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range senders {
			u := s.newUser(fmt.Sprint("sender", i))
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					seq, err := u.c.Enqueue(bg, bob.id, nil, []byte("x"))
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					if seen[seq] {
						t.Errorf("seq %d handed out twice", seq)
					}
					seen[seq] = true
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		for seq := uint64(1); seq <= senders*each; seq++ {
			if !seen[seq] {
				t.Fatalf("seq %d missing: seqs are not dense", seq)
			}
		}
	})
}

// TestPipelinedEnqueuesKeepOrder sends many enqueues on one connection
// without waiting for their answers: they may share commits, and still
// get seqs in the order they were sent.
func TestPipelinedEnqueuesKeepOrder(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		s := startServer(t, Config{})
		alice, bob := s.newUser("alice"), s.newUser("bob")
		const n = 40
		type pending struct {
			fut     schema.NodeService_enqueue_Results_Future
			release func()
		}
		calls := make([]pending, n)
		for i := range calls {
			fut, release := alice.c.Raw().Enqueue(bg, func(p schema.NodeService_enqueue_Params) error {
				p.SetVersion(1)
				a, err := p.NewAuth()
				if err != nil {
					return err
				}
				a.SetVersion(1)
				return errors.Join(a.SetAccessToken(alice.c.Token()), p.SetRecipientKey(bob.id), p.SetPayload([]byte(fmt.Sprint(i))))
			})
			calls[i] = pending{fut, release}
		}
		for i, c := range calls {
			res, err := c.fut.Struct()
			if err != nil {
				t.Fatal(err)
			}
			if res.Seq() != uint64(i+1) {
				t.Fatalf("call %d got seq %d", i, res.Seq())
			}
			c.release()
		}
		got := must[[]rpcEnvelope](t)(fetchAll(bob, nil))
		for i, e := range got {
			if string(e.Data) != fmt.Sprint(i) || e.Seq != uint64(i+1) {
				t.Fatalf("message %d: seq %d %q", i, e.Seq, e.Data)
			}
		}
		if len(got) != n {
			t.Fatalf("%d messages", len(got))
		}
	})
}

// TestServerDiskFull: when the server's disk fills up, an enqueue is
// refused as resource-exhausted (the client's outbox tries again later)
// without the server's paths in the answer; the operator's log has the
// cause; once there is space again, enqueues go on.
func TestServerDiskFull(t *testing.T) {
	dir := smallfs.Dir(t, 6<<20)
	var logs syncBuffer
	s := startServer(t, Config{DataDir: filepath.Join(dir, "data"), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	alice := s.newUser("alice")
	payload := bytes.Repeat([]byte{1}, 64<<10)
	var err error
	for i := 0; i < 200 && err == nil; i++ {
		_, err = alice.c.Enqueue(bg, alice.id, nil, payload)
	}
	wantCode(t, "enqueue on a full disk", err, errcode.ResourceExhausted)
	if strings.Contains(err.Error(), dir) {
		t.Errorf("the answer names the server's files: %v", err)
	}
	if !strings.Contains(logs.String(), "no space left on device") {
		t.Errorf("the log does not say the disk is full:\n%s", logs.String())
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.c.Enqueue(bg, alice.id, nil, payload); err != nil {
		t.Fatalf("enqueue once there is space again: %v", err)
	}
}
