package p2p_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/quicproquo/qpq/p2p"
)

func newPeer(t testing.TB) (ed25519.PublicKey, peer.ID) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := p2p.PeerID(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pub, id
}

func addrs(ss ...string) []ma.Multiaddr {
	out := make([]ma.Multiaddr, len(ss))
	for i, s := range ss {
		out[i] = ma.StringCast(s)
	}
	return out
}

func TestEndpointCanonicalRoundTrip(t *testing.T) {
	key, id := newPeer(t)
	_, relay := newPeer(t)
	circuit := "/ip4/198.51.100.9/udp/4001/quic-v1/p2p/" + relay.String() + "/p2p-circuit"
	a := peer.AddrInfo{ID: id, Addrs: addrs(
		"/ip4/127.0.0.1/udp/4001/quic-v1",
		"/ip4/10.0.0.5/udp/4001/quic-v1",
		circuit,
		"/ip4/203.0.113.50/udp/4001/quic-v1",
		"/ip4/10.0.0.5/udp/4001/quic-v1", // duplicate
	)}
	b := peer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{a.Addrs[3], a.Addrs[2], a.Addrs[1], a.Addrs[0]}}
	ra, err := p2p.EncodeEndpoint(a)
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := p2p.EncodeEndpoint(b)
	if !bytes.Equal(ra, rb) {
		t.Fatalf("same addresses, different records:\n%s\n%s", ra, rb)
	}
	got, err := p2p.DecodeEndpoint(ra, key)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/ip4/203.0.113.50/udp/4001/quic-v1", circuit, "/ip4/10.0.0.5/udp/4001/quic-v1", "/ip4/127.0.0.1/udp/4001/quic-v1"}
	if got.ID != id || len(got.Addrs) != len(want) {
		t.Fatalf("decoded %v", got)
	}
	for i, w := range want {
		if got.Addrs[i].String() != w {
			t.Errorf("addr %d = %s, want %s", i, got.Addrs[i], w)
		}
	}

	many := peer.AddrInfo{ID: id}
	for i := range p2p.MaxEndpointAddrs + 10 {
		many.Addrs = append(many.Addrs, ma.StringCast(fmt.Sprintf("/ip4/203.0.113.%d/udp/4001/quic-v1", i)))
	}
	rec, err := p2p.EncodeEndpoint(many)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := p2p.DecodeEndpoint(rec, key); err != nil || len(got.Addrs) != p2p.MaxEndpointAddrs {
		t.Fatalf("a record of too many addresses: %d kept, %v", len(got.Addrs), err)
	}
}

func TestDecodeEndpointRejects(t *testing.T) {
	key, id := newPeer(t)
	otherKey, other := newPeer(t)
	good, _ := p2p.EncodeEndpoint(peer.AddrInfo{ID: id, Addrs: addrs("/ip4/203.0.113.1/udp/1/quic-v1")})
	secp, _, _ := crypto.GenerateSecp256k1Key(rand.Reader)
	secpID, _ := peer.IDFromPrivateKey(secp)
	var tooMany strings.Builder
	tooMany.WriteString(`{"ID":"` + id.String() + `","Addrs":[`)
	for i := range p2p.MaxEndpointAddrs + 1 {
		if i > 0 {
			tooMany.WriteString(",")
		}
		fmt.Fprintf(&tooMany, `"/ip4/203.0.113.%d/udp/1/quic-v1"`, i)
	}
	tooMany.WriteString("]}")
	for _, tc := range []struct {
		name string
		rec  []byte
		key  ed25519.PublicKey
	}{
		{"another identity's record", good, otherKey},
		{"not JSON", []byte("{nope"), key},
		{"over the size limit", append(bytes.Repeat([]byte(" "), p2p.MaxEndpointRecord), good...), key},
		{"too many addresses", []byte(tooMany.String()), key},
		{"not an Ed25519 peer", []byte(`{"ID":"` + secpID.String() + `","Addrs":[]}`), nil},
		{"an address naming another peer", []byte(`{"ID":"` + id.String() + `","Addrs":["/ip4/203.0.113.1/udp/1/quic-v1/p2p/` + other.String() + `"]}`), key},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := p2p.DecodeEndpoint(tc.rec, tc.key); !errors.Is(err, p2p.ErrBadEndpoint) {
				t.Fatalf("got %v, want ErrBadEndpoint", err)
			}
		})
	}
}

// FuzzDecodeEndpoint: records come from a home server, i.e. the network.
// Decoding never panics, and an accepted record re-encodes to a record
// that decodes to the same addresses.
func FuzzDecodeEndpoint(f *testing.F) {
	_, id := newPeer(f)
	_, relay := newPeer(f)
	rec, _ := p2p.EncodeEndpoint(peer.AddrInfo{ID: id, Addrs: addrs(
		"/ip4/203.0.113.1/udp/4001/quic-v1",
		"/ip6/2001:db8::1/udp/4001/quic-v1",
		"/ip4/198.51.100.9/udp/4001/quic-v1/p2p/"+relay.String()+"/p2p-circuit",
	)})
	f.Add(rec)
	f.Add([]byte(`{"ID":"` + id.String() + `","Addrs":null}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := p2p.DecodeEndpoint(b, nil)
		if err != nil {
			return
		}
		if _, err := p2p.IdentityKey(info.ID); err != nil {
			t.Fatalf("accepted a non-Ed25519 peer %s", info.ID)
		}
		again, err := p2p.EncodeEndpoint(info)
		if err != nil {
			return // e.g. duplicates made it shorter, never longer
		}
		back, err := p2p.DecodeEndpoint(again, nil)
		if err != nil || back.ID != info.ID {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		for _, a := range back.Addrs {
			found := false
			for _, b := range info.Addrs {
				found = found || a.Equal(b)
			}
			if !found {
				t.Fatalf("re-encoding invented address %s", a)
			}
		}
	})
}

// fakeSource is an AddrSource the test drives.
type fakeSource struct {
	mu      sync.Mutex
	info    peer.AddrInfo
	changed chan struct{}
}

func (s *fakeSource) Endpoint() (peer.AddrInfo, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.info, s.changed
}

func (s *fakeSource) set(info peer.AddrInfo) {
	s.mu.Lock()
	s.info = info
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// fakeDirectory records publishes and fails the next fail calls.
type fakeDirectory struct {
	mu        sync.Mutex
	fail      int
	attempts  int
	published chan []byte
	records   map[string][]byte
}

func (d *fakeDirectory) PublishEndpoint(_ context.Context, rec []byte) error {
	d.mu.Lock()
	d.attempts++
	if d.fail > 0 {
		d.fail--
		d.mu.Unlock()
		return errors.New("home server unreachable")
	}
	d.mu.Unlock()
	d.published <- bytes.Clone(rec)
	return nil
}

func (d *fakeDirectory) ResolveEndpoint(_ context.Context, identity ed25519.PublicKey) ([]byte, error) {
	if r, ok := d.records[string(identity)]; ok {
		return r, nil
	}
	return nil, errors.New("not-found: no endpoint")
}

// Publish sends a record at start and on each real change, collapses a
// burst of changes into one publish, skips changes that change nothing,
// retries failures, and refreshes an unchanged record.
func TestPublishChangeDetection(t *testing.T) {
	_, id := newPeer(t)
	info := func(ss ...string) peer.AddrInfo { return peer.AddrInfo{ID: id, Addrs: addrs(ss...)} }
	rec := func(i peer.AddrInfo) string { r, _ := p2p.EncodeEndpoint(i); return string(r) }
	x := info("/ip4/203.0.113.1/udp/1/quic-v1", "/ip4/10.0.0.1/udp/1/quic-v1")
	src := &fakeSource{info: x, changed: make(chan struct{})}
	dir := &fakeDirectory{published: make(chan []byte, 16)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- p2p.Publish(ctx, src, dir, p2p.PublishConfig{Settle: 50 * time.Millisecond, Refresh: 2 * time.Second, RetryMin: 10 * time.Millisecond})
	}()
	next := func(want peer.AddrInfo, what string) {
		t.Helper()
		select {
		case got := <-dir.published:
			if string(got) != rec(want) {
				t.Fatalf("%s: published %s, want %s", what, got, rec(want))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: nothing published", what)
		}
	}
	next(x, "at start")

	// Same addresses in another order: no publish. The next one is Y.
	src.set(info("/ip4/10.0.0.1/udp/1/quic-v1", "/ip4/203.0.113.1/udp/1/quic-v1"))
	y := info("/ip4/203.0.113.2/udp/1/quic-v1")
	src.set(y)
	next(y, "after a change")

	// A burst settles into its last state.
	for i := range 3 {
		src.set(info(fmt.Sprintf("/ip4/203.0.113.%d/udp/1/quic-v1", 10+i)))
	}
	next(info("/ip4/203.0.113.12/udp/1/quic-v1"), "after a burst")

	// Nothing to dial yet: nothing published; then a failing directory
	// is retried until it takes the record.
	src.set(peer.AddrInfo{ID: id})
	dir.mu.Lock()
	dir.fail = 2
	dir.mu.Unlock()
	v := info("/ip4/203.0.113.20/udp/1/quic-v1")
	src.set(v)
	next(v, "after failures")
	dir.mu.Lock()
	if dir.attempts != 6 {
		t.Errorf("%d publish attempts, want 6 (x, y, burst, 2 failures, v)", dir.attempts)
	}
	dir.mu.Unlock()

	// Unchanged for Refresh: sent again.
	next(v, "refresh")

	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish returned %v", err)
	}
}

func TestResolve(t *testing.T) {
	key, id := newPeer(t)
	otherKey, _ := newPeer(t)
	rec, _ := p2p.EncodeEndpoint(peer.AddrInfo{ID: id, Addrs: addrs("/ip4/203.0.113.1/udp/1/quic-v1")})
	dir := &fakeDirectory{records: map[string][]byte{string(key): rec, string(otherKey): rec}}
	info, err := p2p.Resolve(context.Background(), dir, key)
	if err != nil || info.ID != id || len(info.Addrs) != 1 {
		t.Fatalf("Resolve = %v, %v", info, err)
	}
	// A directory handing out someone else's record is caught.
	if _, err := p2p.Resolve(context.Background(), dir, otherKey); !errors.Is(err, p2p.ErrBadEndpoint) {
		t.Fatalf("Resolve of a mismatched record: %v", err)
	}
}
