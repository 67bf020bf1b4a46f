package federation_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/quicproquo/qpq/relay"
	"github.com/quicproquo/qpq/relay/federation"
	"github.com/quicproquo/qpq/relay/federation/fedtest"
	"github.com/quicproquo/qpq/relay/store"
)

// home is a relay of one domain with federation on loopback.
type home struct {
	*fedtest.Home
	r *relay.Relay
}

func (h *home) open(t *testing.T, peers ...*home) {
	t.Helper()
	var ps []federation.Peer
	for _, p := range peers {
		ps = append(ps, p.Peer())
	}
	var err error
	h.r, err = relay.Open(relay.Config{DataDir: h.Dir, Domain: h.Domain, Federation: &federation.Config{
		Listen: h.Addr, Certificate: h.Cert, Peers: ps,
		RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, DialTimeout: 300 * time.Millisecond,
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.r.Close() })
}

func key(b byte) store.Key {
	var k store.Key
	for i := range k {
		k[i] = b
	}
	return k
}

// A delivery that b.test committed but whose answer a.test never got is
// sent again, and b.test recognizes the repeat: it arrives once.
func TestLostAnswerArrivesOnce(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		a, b := &home{Home: fedtest.NewHome(t, "a.test")}, &home{Home: fedtest.NewHome(t, "b.test")}
		a.open(t, b)
		b.open(t, a)
		var lost atomic.Int32
		federation.SetLoseAnswer(func() bool { return lost.Add(1) == 1 })
		defer federation.SetLoseAnswer(nil)

		alice, bob := key(1), key(2)
		for _, m := range []string{"once", "twice"} {
			if _, err := a.r.Store().Deliver(store.Delivery{From: alice, Payload: []byte(m),
				Relays: []store.OutRelay{{Domain: "b.test", Recipients: []store.Key{bob}, Hops: 1}}}); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for {
			if q, _ := a.r.Store().RelayQueued("b.test"); q == 0 {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatal("a.test's queue never drained")
			case <-time.After(10 * time.Millisecond):
			}
		}
		envs, err := b.r.Store().Peek(store.Inbox{Recipient: bob}, 0, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if len(envs) != 2 || string(envs[0].Data) != "once" || string(envs[1].Data) != "twice" {
			var got []string
			for _, e := range envs {
				got = append(got, string(e.Data))
			}
			t.Fatalf("bob's inbox holds %q; want once, twice", got)
		}
		if lost.Load() < 2 {
			t.Fatal("no answer was lost: the test proved nothing")
		}
		// b.test learned alice as a user of a.test from the delivery.
		if h, _ := b.r.Store().Homes(alice); h[0] != "a.test" {
			t.Fatalf("b.test thinks alice lives at %q", h[0])
		}
	})
}

// namer is a Handler that only names identities, and counts the calls it
// answered.
type namer struct {
	federation.Handler // nil: other methods are not called here
	calls              atomic.Int32
}

func (n *namer) ResolveIdentity(context.Context, federation.Request, store.Key) (string, error) {
	n.calls.Add(1)
	return "bob", nil
}

// A Federation answers peers only once Start is called, so that its owner
// can keep what New returned before a peer's call reaches the Handler (the
// relay's Handler reads that field). A call made between New and Start
// reaches no Handler; one after Start is answered.
func TestPeersWaitForStart(t *testing.T) {
	defer goleak.VerifyNone(t)
	a, b := fedtest.NewHome(t, "a.test"), fedtest.NewHome(t, "b.test")
	bStore, err := store.Open(b.Dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer bStore.Close()
	h := &namer{}
	bFed, err := federation.New(federation.Config{Domain: b.Domain, Listen: b.Addr, Certificate: b.Cert, Peers: fedtest.Peers(a)}, bStore, h)
	if err != nil {
		t.Fatal(err)
	}
	defer bFed.Close()
	aStore, err := store.Open(a.Dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer aStore.Close()
	aFed, err := federation.New(federation.Config{Domain: a.Domain, Certificate: a.Cert, Peers: fedtest.Peers(b),
		RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond}, aStore, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer aFed.Close()
	aFed.Start()

	early, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if name, err := aFed.ResolveIdentity(early, b.Domain, 1, key(2)); err == nil {
		t.Fatalf("b.test answered %q before Start", name)
	}
	if n := h.calls.Load(); n != 0 {
		t.Fatalf("b.test's Handler answered %d calls before Start", n)
	}

	bFed.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		name, err := aFed.ResolveIdentity(ctx, b.Domain, 1, key(2))
		if err == nil {
			if name != "bob" {
				t.Fatalf("b.test named the key %q, want bob", name)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("b.test never answered after Start: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // a.test's connection may still be backing off
	}
}
