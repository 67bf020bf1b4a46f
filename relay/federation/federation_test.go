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
