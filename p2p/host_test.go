package p2p_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/quicproquo/qpq/p2p"
	"github.com/quicproquo/qpq/p2p/peersvc"
	"github.com/quicproquo/qpq/schema"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"
)

func leakCheck(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// testNode is a host with its peer service on loopback.
type testNode struct {
	priv  ed25519.PrivateKey
	pub   ed25519.PublicKey
	host  *p2p.Host
	store *peersvc.Store
	svc   *peersvc.Service

	mu     sync.Mutex
	events []p2p.LinkEvent
	evCh   chan struct{}
}

func newTestNode(t *testing.T, name string, mod func(*p2p.Config)) *testNode {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(t.TempDir(), "node.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	n := &testNode{priv: priv, pub: pub, evCh: make(chan struct{}, 1)}
	if n.store, err = peersvc.NewStore(db); err != nil {
		t.Fatal(err)
	}
	if n.svc, err = peersvc.New(n.store, peersvc.Config{Identity: pub, Username: name}); err != nil {
		t.Fatal(err)
	}
	cfg := p2p.Config{
		Identity:    priv,
		ListenAddrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/udp/0/quic-v1")},
		Service:     n.svc.Client,
		OnLink: func(ev p2p.LinkEvent) {
			n.mu.Lock()
			n.events = append(n.events, ev)
			n.mu.Unlock()
			select {
			case n.evCh <- struct{}{}:
			default:
			}
		},
		Link: p2p.LinkConfig{Heartbeat: 200 * time.Millisecond, DeadAfter: time.Second, RedialMax: time.Second},
	}
	if mod != nil {
		mod(&cfg)
	}
	if n.host, err = p2p.New(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.host.Close() })
	return n
}

// waitLink waits for a link event about p in state st.
func (n *testNode) waitLink(t *testing.T, p peer.ID, st p2p.LinkState, timeout time.Duration) p2p.LinkEvent {
	t.Helper()
	deadline := time.After(timeout)
	for {
		n.mu.Lock()
		for i, ev := range n.events {
			if ev.Peer == p && ev.State == st {
				n.events = n.events[i+1:]
				n.mu.Unlock()
				return ev
			}
		}
		n.mu.Unlock()
		select {
		case <-n.evCh:
		case <-deadline:
			t.Fatalf("no %s link event for %s within %v", st, p.ShortString(), timeout)
		}
	}
}

func TestIdentityPeerIDRoundTrip(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	id, err := p2p.PeerID(pub)
	if err != nil {
		t.Fatal(err)
	}
	back, err := p2p.IdentityKey(id)
	if err != nil || !bytes.Equal(back, pub) {
		t.Fatalf("IdentityKey(PeerID(k)) = %x, %v", back, err)
	}
	if _, err := p2p.PeerID(pub[:31]); err == nil {
		t.Error("PeerID of a 31-byte key succeeded")
	}
	if _, err := p2p.IdentityKey(peer.ID("not a peer id")); err == nil {
		t.Error("IdentityKey of garbage succeeded")
	}
}

// Two hosts on loopback: A calls B's NodeService over /quicproquo/p2p/1,
// B records A's identity as the sender.
func TestRPCOverLinkLoopback(t *testing.T) {
	leakCheck(t)
	a := newTestNode(t, "alice", nil)
	b := newTestNode(t, "bob", nil)
	if err := b.store.AddKeyPackages([]byte("bob-kp")); err != nil {
		t.Fatal(err)
	}
	if a.host.ID() != mustPeerID(t, a.pub) {
		t.Fatal("host ID is not the identity's peer ID")
	}
	a.host.AddPeer(b.host.AddrInfo())
	ev := a.waitLink(t, b.host.ID(), p2p.LinkDirect, 10*time.Second)
	if !bytes.Equal(ev.Identity, b.pub) || ev.Addr == nil {
		t.Fatalf("link event %+v", ev)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ns, err := a.host.NodeService(ctx, b.host.ID())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Release()
	f, rel := ns.FetchKeyPackage(ctx, func(p schema.NodeService_fetchKeyPackage_Params) error {
		return p.SetIdentityKey(b.pub)
	})
	res, err := f.Struct()
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := res.Package()
	if string(kp) != "bob-kp" {
		t.Fatalf("fetchKeyPackage = %q", kp)
	}
	rel()
	changed := b.store.InboxChanged()
	ef, rel := ns.Enqueue(ctx, func(p schema.NodeService_enqueue_Params) error {
		p.SetVersion(1)
		p.SetPayload([]byte("hello bob"))
		return p.SetRecipientKey(b.pub)
	})
	if _, err := ef.Struct(); err != nil {
		t.Fatal(err)
	}
	rel()
	<-changed
	ds, err := b.store.Peek(0)
	if err != nil || len(ds) != 1 || !bytes.Equal(ds[0].Sender, a.pub) || string(ds[0].Payload) != "hello bob" {
		t.Fatalf("B's inbox: %+v, %v", ds, err)
	}
	// The cached connection is reused.
	ns2, err := a.host.NodeService(ctx, b.host.ID())
	if err != nil {
		t.Fatal(err)
	}
	ns2.Release()
}

func mustPeerID(t *testing.T, k ed25519.PublicKey) peer.ID {
	id, err := p2p.PeerID(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// A link whose peer goes away is reported down; the peer, back at the
// same address with the same identity, is redialed and reported direct.
func TestLinkDownAndRedialLoopback(t *testing.T) {
	leakCheck(t)
	a := newTestNode(t, "alice", nil)
	b := newTestNode(t, "bob", nil)
	info := b.host.AddrInfo()
	a.host.AddPeer(info)
	a.waitLink(t, b.host.ID(), p2p.LinkDirect, 10*time.Second)
	if a.host.Link(b.host.ID()) != p2p.LinkDirect {
		t.Fatal("Link() disagrees with the event")
	}

	b.host.Close()
	a.waitLink(t, b.host.ID(), p2p.LinkDown, 10*time.Second)

	// Same key, same port.
	b2, err := p2p.New(p2p.Config{Identity: b.priv, ListenAddrs: info.Addrs, Service: b.svc.Client})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	a.waitLink(t, b.host.ID(), p2p.LinkDirect, 10*time.Second)

	a.host.RemovePeer(b.host.ID())
	a.host.AddPeer(a.host.AddrInfo()) // itself: ignored
	if err := a.host.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.host.NodeService(context.Background(), b.host.ID()); err != p2p.ErrClosed {
		t.Fatalf("NodeService after Close: %v", err)
	}
}
