package store

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// A delivery to local inboxes and to two other servers' queues commits in
// one transaction; each queue hands its items out in order, and survives
// a restart.
func TestDeliverQueuesForOtherServers(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	alice, bob, carol, dave := key(1), key(2), key(3), key(4)
	d, err := s.Deliver(Delivery{
		From: alice, Payload: []byte("hi"),
		Local:  []Key{bob},
		Relays: []OutRelay{{Domain: "b.test", Recipients: []Key{carol}, Hops: 1}, {Domain: "c.test", Recipients: []Key{carol, dave}, Hops: 2}},
	})
	if err != nil || len(d.Local) != 1 || len(d.Relays) != 2 || d.Relays[0] != 1 || d.Relays[1] != 1 {
		t.Fatalf("deliver: %+v, %v", d, err)
	}
	d, err = s.Deliver(Delivery{From: alice, Payload: []byte("again"), Relays: []OutRelay{{Domain: "b.test", Recipients: []Key{carol}, Hops: 1}}})
	if err != nil || d.Relays[0] != 2 {
		t.Fatalf("second deliver: %+v, %v", d, err)
	}
	if n := s.Queued(); n != 1 {
		t.Errorf("queued gauge %d: relay queues are not inboxes", n)
	}
	s.Close()
	s = open(t, dir, Options{})

	it, ok, err := s.NextRelay("c.test")
	if err != nil || !ok || it.Seq != 1 || it.Hops != 2 || it.From != alice || len(it.Recipients) != 2 || it.Recipients[1] != dave || string(it.Payload) != "hi" {
		t.Fatalf("c.test head: %+v %v %v", it, ok, err)
	}
	for _, want := range []string{"hi", "again"} {
		it, ok, err := s.NextRelay("b.test")
		if err != nil || !ok || string(it.Payload) != want {
			t.Fatalf("b.test head %+v %v %v, want %q", it, ok, err, want)
		}
		if err := s.RemoveRelay("b.test", it.Seq); err != nil {
			t.Fatal(err)
		}
		if err := s.RemoveRelay("b.test", it.Seq); err != nil {
			t.Fatalf("removing twice: %v", err)
		}
	}
	if _, ok, _ := s.NextRelay("b.test"); ok {
		t.Fatal("b.test's queue is not empty")
	}
	if n, _ := s.RelayQueued("c.test"); n != 1 {
		t.Fatalf("c.test queue depth %d", n)
	}
}

// A queue full for one server refuses the whole delivery, local part
// included.
func TestRelayQueueFull(t *testing.T) {
	s := open(t, t.TempDir(), Options{MaxRelayQueue: 2})
	for range 2 {
		if _, err := s.Deliver(Delivery{From: key(1), Payload: []byte("x"), Relays: []OutRelay{{Domain: "b.test", Recipients: []Key{key(2)}}}}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.Deliver(Delivery{From: key(1), Payload: []byte("x"), Local: []Key{key(3)}, Relays: []OutRelay{{Domain: "b.test", Recipients: []Key{key(2)}}}})
	if !errors.Is(err, ErrRelayQueueFull) {
		t.Fatalf("third: %v", err)
	}
	if _, depth, _ := s.InboxState(Inbox{Recipient: key(3)}); depth != 0 {
		t.Fatal("the local part of a refused delivery was stored")
	}
}

// A delivery relayed here is applied once per (origin, stream, seq): a
// repeat stores nothing; a new stream (the origin restarted) starts over.
func TestIncomingDeduplicated(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	alice, bob := key(1), key(2)
	stream := [StreamSize]byte{1}
	deliver := func(st [StreamSize]byte, seq uint64) Delivered {
		t.Helper()
		d, err := s.Deliver(Delivery{From: alice, Payload: []byte{byte(seq)}, Local: []Key{bob},
			Incoming: &Incoming{Origin: "a.test", Stream: st, Seq: seq, LearnSender: true}})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := deliver(stream, 5); d.Duplicate || d.Local[0] != 1 {
		t.Fatalf("first: %+v", d)
	}
	for _, seq := range []uint64{5, 3} {
		if d := deliver(stream, seq); !d.Duplicate || d.Local != nil {
			t.Fatalf("repeat of seq %d: %+v", seq, d)
		}
	}
	if d := deliver(stream, 6); d.Duplicate || d.Local[0] != 2 {
		t.Fatalf("next: %+v", d)
	}
	if d := deliver([StreamSize]byte{2}, 1); d.Duplicate {
		t.Fatal("a new stream's first delivery taken for a repeat")
	}
	if _, depth, _ := s.InboxState(Inbox{Recipient: bob}); depth != 3 {
		t.Fatalf("bob holds %d messages, want 3", depth)
	}
	// The sender was learned as a user of a.test.
	if h, _ := s.Homes(alice, bob); h[0] != "a.test" || h[1] != "" {
		t.Fatalf("homes %q", h)
	}
	// Marks not updated since a time are swept; fresh ones stay.
	if n, err := s.SweepIncoming(time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("sweep of nothing old: %d, %v", n, err)
	}
	if n, err := s.SweepIncoming(time.Now().Add(time.Hour)); err != nil || n != 2 {
		t.Fatalf("sweep: %d, %v", n, err)
	}
}

// A resolved home replaces a seen one, never the other way round; keys
// registered here are never remote.
func TestRemotes(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	k := key(9)
	if err := s.PutRemote(k, Remote{Domain: "seen.test"}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRemote(k, Remote{Domain: "b.test", Name: "bob", Resolved: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRemote(k, Remote{Domain: "other.test"}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRemote(k, Remote{Domain: "evil.test", Name: "bob", Resolved: true}); !errors.Is(err, ErrRemoteClaimed) {
		t.Fatalf("another domain's resolve replaced b.test's: %v", err)
	}
	if err := s.PutRemote(k, Remote{Domain: "b.test", Name: "bob", Resolved: true}); err != nil {
		t.Fatalf("b.test resolving again: %v", err)
	}
	r, ok, err := s.RemoteOf(k)
	if err != nil || !ok || r.Domain != "b.test" || r.Name != "bob" || !r.Resolved {
		t.Fatalf("remote %+v %v %v", r, ok, err)
	}
	if err := s.CreateUser("carol", User{Identity: key(3), Record: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRemote(key(3), Remote{Domain: "b.test", Resolved: true}); !errors.Is(err, ErrIdentityTaken) {
		t.Fatalf("a local user made remote: %v", err)
	}
	if ok, _ := s.IsLocal(key(3)); !ok {
		t.Fatal("carol is not local")
	}
}

// A relayed delivery on a channel imports the pair's channel when asked,
// only for the channel id of that pair.
func TestIncomingImportsChannel(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	alice, bob := key(1), key(2)
	id, _ := s.channelRecord(alice, bob)
	in := func(seq uint64, ch ChannelID) error {
		_, err := s.Deliver(Delivery{From: alice, Channel: ch, Payload: []byte("w"), Local: []Key{bob},
			Incoming: &Incoming{Origin: "a.test", Seq: seq, ImportChannel: true}})
		return err
	}
	other, _ := s.channelRecord(alice, key(3))
	if err := in(1, other); !errors.Is(err, ErrNotChannelMember) {
		t.Fatalf("another pair's channel: %v", err)
	}
	if err := in(2, id); err != nil {
		t.Fatal(err)
	}
	ch, ok, err := s.Channel(id)
	if err != nil || !ok || !ch.Has(alice) || !ch.Has(bob) {
		t.Fatalf("channel %+v %v %v", ch, ok, err)
	}
	// Without import, a channel must exist; with relays its members are
	// checked too.
	if _, err := s.Deliver(Delivery{From: bob, Channel: other, Payload: []byte("x"), Relays: []OutRelay{{Domain: "a.test", Recipients: []Key{alice}}}}); !errors.Is(err, ErrChannelNotFound) {
		t.Fatalf("unknown channel to a remote recipient: %v", err)
	}
	if _, err := s.Deliver(Delivery{From: bob, Channel: id, Payload: []byte("x"), Relays: []OutRelay{{Domain: "a.test", Recipients: []Key{key(7)}}}}); !errors.Is(err, ErrNotChannelMember) {
		t.Fatalf("a remote non-member: %v", err)
	}
	if got, err := s.ImportChannel(bob, alice); err != nil || got != id {
		t.Fatalf("import: %v %v", got, err)
	}
	if _, created, _ := s.CreateChannel(alice, bob); created {
		t.Fatal("an imported channel was created again")
	}
}

// FuzzRelayItem: stored relay items decode strictly and re-encode to the
// same bytes.
func FuzzRelayItem(f *testing.F) {
	f.Add(RelayItem{Hops: 1, From: key(1), Recipients: []Key{key(2)}, Payload: []byte("hi")}.encode())
	f.Add(RelayItem{Hops: 3, From: key(1), Channel: ChannelID{9}, Recipients: []Key{key(2), key(3)}, Payload: bytes.Repeat([]byte{7}, 100)}.encode())
	f.Add([]byte{1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		it, err := decodeRelayItem(1, b)
		if err != nil {
			return
		}
		if !bytes.Equal(it.encode(), b) {
			t.Fatalf("re-encoding differs")
		}
	})
}

// FuzzRemote: stored remote records decode strictly and round-trip.
func FuzzRemote(f *testing.F) {
	f.Add(Remote{Domain: "b.test", Name: "bob", Resolved: true, Updated: time.Unix(1, 2)}.encode())
	f.Add(Remote{Domain: "x"}.encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRemote(b)
		if err != nil {
			return
		}
		if !bytes.Equal(r.encode(), b) {
			t.Fatalf("re-encoding differs")
		}
	})
}
