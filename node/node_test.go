package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	"go.uber.org/goleak"

	"github.com/quicproquo/qpq/internal/boltcheck"
	"github.com/quicproquo/qpq/node/conv"
	"github.com/quicproquo/qpq/node/identity"
	"github.com/quicproquo/qpq/node/internal/nodetest"
	"github.com/quicproquo/qpq/node/keys"
	"github.com/quicproquo/qpq/node/outbox"
	"github.com/quicproquo/qpq/p2p"
	"github.com/quicproquo/qpq/p2p/mdns"
	"github.com/quicproquo/qpq/rpc"
)

const waitLimit = 30 * time.Second

func leakCheck(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// tnode is a Node on loopback, its events, and its lifecycle.
type tnode struct {
	t    testing.TB
	name string
	dir  string
	srv  *nodetest.Server
	n    *Node
	// serverOnly: see Config.ServerOnly.
	serverOnly bool

	log    nodetest.Log[Event]
	cancel context.CancelFunc
	done   chan error
}

func newNode(t *testing.T, name string, srv *nodetest.Server) *tnode {
	return benchNode(t, name, srv)
}

// serverOnlyNode is newNode with Config.ServerOnly.
func serverOnlyNode(t *testing.T, name string, srv *nodetest.Server) *tnode {
	tn := &tnode{t: t, name: name, dir: t.TempDir(), srv: srv, serverOnly: true}
	tn.start()
	t.Cleanup(tn.stop)
	return tn
}

func benchNode(t testing.TB, name string, srv ...*nodetest.Server) *tnode {
	tn := &tnode{t: t, name: name, dir: t.TempDir()}
	if len(srv) > 0 {
		tn.srv = srv[0]
	}
	tn.start()
	t.Cleanup(tn.stop)
	return tn
}

func (tn *tnode) start() {
	t := tn.t
	t.Helper()
	cfg := Config{
		DataDir:     tn.dir,
		Username:    tn.name,
		NoMDNS:      true, // never multicast outside a namespace
		ListenAddrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/udp/0/quic-v1")},
		Link:        p2p.LinkConfig{Heartbeat: 200 * time.Millisecond, DeadAfter: time.Second, RedialMax: time.Second},
		OnEvent:     tn.log.Add,
		ServerOnly:  tn.serverOnly,
		Outbox:      outbox.Config{WaitingAfter: time.Second}, // above DirectTimeout: a failed dial is a failure, not a slow attempt
	}
	if tn.srv != nil {
		cfg.Server = tn.srv.Addr
		cfg.Password = func(context.Context) ([]byte, error) { return []byte("pw of " + tn.name), nil }
	}
	n, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tn.n, tn.cancel, tn.done = n, cancel, make(chan error, 1)
	go func() { tn.done <- n.Run(ctx) }()
}

func (tn *tnode) stop() {
	if tn.cancel == nil {
		return
	}
	tn.cancel()
	<-tn.done
	tn.n.Close()
	tn.cancel = nil
}

func (tn *tnode) restart() {
	tn.stop()
	tn.log.Reset()
	tn.start()
}

// wait returns (and removes) the first event of type T match accepts.
func wait[T Event](tn *tnode, what string, match func(T) bool) T {
	tn.t.Helper()
	ev := tn.log.Wait(tn.t, tn.name+": "+what, waitLimit, func(ev Event) bool {
		e, ok := ev.(T)
		return ok && (match == nil || match(e))
	})
	return ev.(T)
}

func (tn *tnode) errors() []Error {
	var out []Error
	for _, ev := range tn.log.All() {
		if e, ok := ev.(Error); ok {
			out = append(out, e)
		}
	}
	return out
}

func link(a, b *tnode) {
	a.n.AddPeer(b.n.AddrInfo())
	wait(a, "link to "+b.name, func(p Peer) bool { return p.User == b.name && p.Link == "direct" })
}

func (tn *tnode) waitText(conv, text string) Message {
	tn.t.Helper()
	return wait(tn, fmt.Sprintf("message %q in %s", text, conv), func(m Message) bool {
		return m.Conversation == conv && m.Text == text
	})
}

// TestDirectDM: two nodes on loopback, no server: a DM both ways over the
// P2P link.
func TestDirectDM(t *testing.T) {
	leakCheck(t)
	alice, bob := newNode(t, "alice", nil), newNode(t, "bob", nil)
	wait(alice, "ready", func(Ready) bool { return true })
	wait(bob, "ready", func(Ready) bool { return true })
	link(alice, bob)
	wait(bob, "link to alice", func(p Peer) bool { return p.User == "alice" && p.Link == "direct" })

	ctx := context.Background()
	c, err := alice.n.DM(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "bob" || len(c.Members) != 2 {
		t.Fatalf("alice's DM: %+v", c)
	}
	if _, err := bob.n.DM(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	wait(bob, "DM with alice", func(c Conversation) bool { return c.Name == "alice" && len(c.Members) == 2 })
	id, err := alice.n.Send("bob", "hello bob")
	if err != nil {
		t.Fatal(err)
	}
	m := bob.waitText("alice", "hello bob")
	if m.From != "alice" || m.Via != "direct" || m.ID != id {
		t.Fatalf("bob got %+v", m)
	}
	s := wait(alice, "sent", func(s Sent) bool { return s.ID == id })
	if s.Via != "direct" || s.To != "bob" || s.Conversation != "bob" {
		t.Fatalf("sent %+v", s)
	}
	if _, err := bob.n.Send("alice", "hello alice"); err != nil {
		t.Fatal(err)
	}
	alice.waitText("bob", "hello alice")
	for _, tn := range []*tnode{alice, bob} {
		if errs := tn.errors(); len(errs) > 0 {
			t.Errorf("%s: errors %+v", tn.name, errs)
		}
	}
}

// A fingerprint shows 128 bits of the identity key, in groups people can
// read to each other; anything but an identity key has none.
// TestDamagedDatabase: a node.db whose pages are damaged (here, every
// page after the meta pages overwritten) is refused with an error, not a
// panic, and the identity beside it is untouched.
func TestDamagedDatabase(t *testing.T) {
	tn := benchNode(t, "alice", nil)
	want := tn.n.cfg.Username
	self := tn.n.self
	tn.stop()
	path := filepath.Join(tn.dir, DBFile)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 2 * os.Getpagesize(); i < len(b); i++ {
		b[i] = 0xFF
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Open(context.Background(), Config{DataDir: tn.dir, Username: want, NoMDNS: true})
	if !errors.Is(err, boltcheck.ErrDamaged) || !strings.Contains(err.Error(), identity.IdentityFile) {
		t.Fatalf("Open = %v, want a damaged-file error", err)
	}
	id, created, err := identity.LoadOrCreate(tn.dir)
	if err != nil || created || !bytes.Equal(id.PublicKey(), self) {
		t.Fatalf("identity after the refusal: created %v, err %v", created, err)
	}
}

func TestFingerprint(t *testing.T) {
	id := make([]byte, ed25519.PublicKeySize)
	for i := range id {
		id[i] = byte(i)
	}
	fp := Fingerprint(hex.EncodeToString(id))
	if want := "0001 0203 0405 0607 0809 0a0b 0c0d 0e0f"; fp != want {
		t.Fatalf("fingerprint %q, want %q", fp, want)
	}
	id[fingerprintBytes-1] ^= 1
	if Fingerprint(hex.EncodeToString(id)) == fp {
		t.Fatal("keys that differ in the 128th bit share a fingerprint")
	}
	for _, bad := range []string{"", "zz", hex.EncodeToString(id[:31]), hex.EncodeToString(append(id, 0))} {
		if got := Fingerprint(bad); got != "" {
			t.Errorf("Fingerprint(%q) = %q, want none", bad, got)
		}
	}
}

func TestMarshalEvent(t *testing.T) {
	b, err := MarshalEvent(Sent{Conversation: "bob", ID: "00", Via: "direct", To: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"type":"sent","conversation":"bob","id":"00","via":"direct","to":"bob"}` {
		t.Fatalf("%s", b)
	}
	var m map[string]any
	b, _ = MarshalEvent(Conversation{Name: "g", Members: []string{}})
	if err := json.Unmarshal(b, &m); err != nil || m["type"] != "conversation" || m["epoch"] != 0.0 {
		t.Fatalf("%s: %v", b, err)
	}
}

// TestServerDM: two nodes that keep their addresses from each other
// (ServerOnly, so no P2P link) talk through their home server:
// registration, pin, DM, and messages kept while the recipient is down,
// read after it restarts, each once.
func TestServerDM(t *testing.T) {
	leakCheck(t)
	srv := nodetest.StartServer(t)
	alice, bob := serverOnlyNode(t, "alice", srv), serverOnlyNode(t, "bob", srv)
	for _, tn := range []*tnode{alice, bob} {
		p := wait(tn, "pin", func(Pin) bool { return true })
		if !p.First || p.Fingerprint != srv.FP.String() {
			t.Fatalf("%s pinned %+v, server is %s", tn.name, p, srv.FP)
		}
		wait(tn, "ready", func(Ready) bool { return true })
	}
	ctx := context.Background()
	if _, err := bob.n.DM(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.n.DM(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	wait(alice, "DM with bob", func(c Conversation) bool { return c.Name == "bob" && len(c.Members) == 2 })
	wait(bob, "DM with alice", func(c Conversation) bool { return c.Name == "alice" && len(c.Members) == 2 })
	if _, err := alice.n.Send("bob", "via the server"); err != nil {
		t.Fatal(err)
	}
	if m := bob.waitText("alice", "via the server"); m.Via != "server" {
		t.Fatalf("via %q", m.Via)
	}
	wait(alice, "sent", func(s Sent) bool { return s.Via == "server" && s.To == "bob" })

	bob.stop()
	for i := range 5 {
		if _, err := alice.n.Send("bob", fmt.Sprint("while down ", i)); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		wait(alice, "sent", func(s Sent) bool { return s.Via == "server" })
	}
	bob.restart()
	for i := range 5 {
		bob.waitText("alice", fmt.Sprint("while down ", i))
	}
	if _, err := bob.n.Send("alice", "back"); err != nil {
		t.Fatal(err)
	}
	alice.waitText("bob", "back")
	for _, ev := range bob.log.All() {
		if m, ok := ev.(Message); ok {
			t.Errorf("bob: extra message %+v", m)
		}
	}
	for _, tn := range []*tnode{alice, bob} {
		if ps := tn.n.Peers(); len(ps) != 0 {
			t.Errorf("%s is server-only but linked to %+v", tn.name, ps)
		}
	}

	// With the home server down too, what alice sends waits, and she is
	// told why; it goes out when the server is back.
	srv.Stop()
	wait(alice, "server down", func(s Server) bool { return s.State == "down" })
	if _, err := alice.n.Send("bob", "while the server is down"); err != nil {
		t.Fatal(err)
	}
	d := wait(alice, "waiting", func(Delivery) bool { return true })
	if d.State != DeliveryWaiting || d.To != "bob" || d.Message != "not reachable: no link to the peer, and the home server is not connected" {
		t.Fatalf("delivery %+v", d)
	}
	srv.Start()
	if d := wait(alice, "resumed", func(Delivery) bool { return true }); d.State != DeliveryResumed || d.Via != "server" {
		t.Fatalf("delivery %+v", d)
	}
	bob.waitText("alice", "while the server is down")
}

// TestReachThroughServer: two nodes that do not see each other on a LAN
// (no mDNS) but share a home server link up once they share a
// conversation — each resolves the other's endpoint record there — and
// then talk over that link, not through the server's store.
func TestReachThroughServer(t *testing.T) {
	leakCheck(t)
	srv := nodetest.StartServer(t)
	alice, bob := newNode(t, "alice", srv), newNode(t, "bob", srv)
	for _, tn := range []*tnode{alice, bob} {
		wait(tn, "ready", func(Ready) bool { return true })
	}
	ctx := context.Background()
	if _, err := alice.n.DM(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.n.DM(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	wait(alice, "DM with bob", func(c Conversation) bool { return c.Name == "bob" && len(c.Members) == 2 })
	wait(bob, "DM with alice", func(c Conversation) bool { return c.Name == "alice" && len(c.Members) == 2 })
	wait(alice, "link to bob", func(p Peer) bool { return p.User == "bob" && p.Link == "direct" })
	for i := 0; ; i++ {
		text := fmt.Sprint("hello ", i)
		if _, err := alice.n.Send("bob", text); err != nil {
			t.Fatal(err)
		}
		if m := bob.waitText("alice", text); m.Via == "direct" {
			break
		}
		if i == 20 {
			t.Fatal("20 messages after the link came up, none went over it")
		}
	}
}

// TestDrainedStock: someone fetches every KeyPackage bob keeps at the
// home server while bob is offline; alice can still open a DM with him
// (the server hands out bob's last-resort package), and bob joins it when
// he is back.
func TestDrainedStock(t *testing.T) {
	leakCheck(t)
	srv := nodetest.StartServer(t)
	alice, bob := newNode(t, "alice", srv), newNode(t, "bob", srv)
	wait(alice, "ready", func(Ready) bool { return true })
	wait(bob, "ready", func(Ready) bool { return true })
	bobID := bob.n.self
	bob.stop()

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	conn, err := rpc.Dial(ctx, srv.Addr, rpc.DialOptions{Pin: srv.FP})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	mallory := conn.Client()
	malloryID, _, _ := ed25519.GenerateKey(nil)
	if err := mallory.Register(ctx, "mallory", []byte("pw"), malloryID); err != nil {
		t.Fatal(err)
	}
	if _, err := mallory.Login(ctx, "mallory", []byte("pw"), malloryID); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	var last []byte
	for i := range keys.DefaultStock + 2 {
		if last, err = mallory.FetchKeyPackage(ctx, bobID); err != nil || last == nil {
			t.Fatalf("fetch %d: %d bytes, %v", i, len(last), err)
		}
		seen[string(last)]++
	}
	if seen[string(last)] != 2 || len(seen) != keys.DefaultStock+1 {
		t.Fatalf("drained %d distinct packages, the last one %d times; want the stock of %d, then one repeated",
			len(seen), seen[string(last)], keys.DefaultStock)
	}

	if _, err := alice.n.DM(ctx, "bob"); err != nil {
		t.Fatalf("DM with a drained stock: %v", err)
	}
	wait(alice, "DM with bob", func(c Conversation) bool { return c.Name == "bob" && len(c.Members) == 2 })
	if _, err := alice.n.Send("bob", "still reachable"); err != nil {
		t.Fatal(err)
	}
	bob.restart()
	bob.waitText("alice", "still reachable")
	if _, err := bob.n.Send("alice", "yes"); err != nil {
		t.Fatal(err)
	}
	alice.waitText("bob", "yes")
	for _, tn := range []*tnode{alice, bob} {
		if errs := tn.errors(); len(errs) > 0 {
			t.Errorf("%s: errors %+v", tn.name, errs)
		}
	}
}

// TestGroupOverLinks: three linked nodes make a group, talk, restart one,
// remove one.
func TestGroupOverLinks(t *testing.T) {
	leakCheck(t)
	alice, bob, carol := newNode(t, "alice", nil), newNode(t, "bob", nil), newNode(t, "carol", nil)
	link(alice, bob)
	link(alice, carol)
	link(bob, carol)
	ctx := context.Background()
	if _, err := alice.n.CreateGroup("crew"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"bob", "carol"} {
		if err := alice.n.Invite(ctx, "crew", name); err != nil {
			t.Fatal(err)
		}
	}
	for _, tn := range []*tnode{bob, carol} {
		wait(tn, "group", func(c Conversation) bool { return c.Name == "crew" && len(c.Members) == 3 })
	}
	for _, tn := range []*tnode{alice, bob, carol} {
		if _, err := tn.n.Send("crew", "hi from "+tn.name); err != nil {
			t.Fatal(err)
		}
	}
	for _, tn := range []*tnode{alice, bob, carol} {
		for _, o := range []*tnode{alice, bob, carol} {
			if o != tn {
				tn.waitText("crew", "hi from "+o.name)
			}
		}
	}

	bob.restart() // on a new port: without mDNS, link again by hand
	link(bob, alice)
	link(bob, carol)
	if _, err := bob.n.Send("crew", "bob is back"); err != nil {
		t.Fatal(err)
	}
	alice.waitText("crew", "bob is back")
	carol.waitText("crew", "bob is back")

	// bob (not the committer) removes carol: alice commits it.
	if err := bob.n.Remove(ctx, "crew", "carol"); err != nil {
		t.Fatal(err)
	}
	wait(carol, "removal", func(c Conversation) bool { return c.Name == "crew" && c.Status == "removed" })
	wait(bob, "carol gone", func(c Conversation) bool { return c.Name == "crew" && len(c.Members) == 2 })
	if _, err := alice.n.Send("crew", "just us"); err != nil {
		t.Fatal(err)
	}
	bob.waitText("crew", "just us")
	for _, tn := range []*tnode{alice, bob, carol} {
		if errs := tn.errors(); len(errs) > 0 {
			t.Errorf("%s: errors %+v", tn.name, errs)
		}
	}
}

// TestSimultaneousDM: both sides open the DM at the same moment, over the
// link and at the home server: one group, and both can talk.
func TestSimultaneousDM(t *testing.T) {
	leakCheck(t)
	srv := nodetest.StartServer(t)
	for round, linked := range []bool{true, false} {
		alice, bob := newNode(t, fmt.Sprint("alice", round), srv), newNode(t, fmt.Sprint("bob", round), srv)
		wait(alice, "ready", func(Ready) bool { return true })
		wait(bob, "ready", func(Ready) bool { return true })
		if linked {
			link(alice, bob)
		}
		var wg sync.WaitGroup
		var cs [2]Conversation
		var errs [2]error
		for i, p := range [][2]*tnode{{alice, bob}, {bob, alice}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cs[i], errs[i] = p[0].n.DM(context.Background(), p[1].name)
			}()
		}
		wg.Wait()
		if errs[0] != nil || errs[1] != nil {
			t.Fatal(errs)
		}
		if cs[0].ID != cs[1].ID {
			t.Fatalf("two DMs: %s and %s", cs[0].ID, cs[1].ID)
		}
		wait(alice, "DM", func(c Conversation) bool { return c.Name == bob.name && len(c.Members) == 2 })
		wait(bob, "DM", func(c Conversation) bool { return c.Name == alice.name && len(c.Members) == 2 })
		if _, err := alice.n.Send(bob.name, "a→b"); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.n.Send(alice.name, "b→a"); err != nil {
			t.Fatal(err)
		}
		bob.waitText(alice.name, "a→b")
		alice.waitText(bob.name, "b→a")
		if n := len(alice.n.Conversations()); n != 1 {
			t.Fatalf("alice has %d conversations", n)
		}
	}
}

// TestNameClaimedTwice: a name already bound is not rebound to another
// identity; the user is told once per claimant.
func TestNameClaimedTwice(t *testing.T) {
	leakCheck(t)
	alice := newNode(t, "alice", nil)
	bob, mallory := make([]byte, 32), make([]byte, 32)
	bob[0], mallory[0] = 1, 2
	if !alice.n.bind("bob", bob) {
		t.Fatal("first binding refused")
	}
	for range 3 {
		if alice.n.bind("bob", mallory) {
			t.Fatal("rebinding accepted")
		}
	}
	e := wait(alice, "conflict", func(e Error) bool { return e.Code == "permission-denied" })
	if !strings.Contains(e.Message, `"bob"`) {
		t.Fatalf("error %+v", e)
	}
	alice.n.Report(Server{State: "marker"}) // events keep their order: repeats would come before it
	wait(alice, "marker", func(s Server) bool { return s.State == "marker" })
	if errs := alice.errors(); len(errs) != 0 {
		t.Fatalf("told %d more times: %+v", len(errs), errs)
	}
	if id, _ := alice.n.resolve(context.Background(), "bob"); string(id) != string(bob) {
		t.Fatal("bob resolves to the claimant")
	}
}

// TestLostLANPeerIsNoLongerDialed: a node keeps a link to a peer mDNS
// sees, and stops dialing it once mDNS loses it, unless it was given as a
// peer (or found through the home server): otherwise every identity
// anyone ever announced on a LAN would be dialed for as long as the node
// runs.
func TestLostLANPeerIsNoLongerDialed(t *testing.T) {
	leakCheck(t)
	alice := newNode(t, "alice", nil)
	lanPeer := func(name string) mdns.Peer {
		pub, _, _ := ed25519.GenerateKey(nil)
		id, err := p2p.PeerID(pub)
		if err != nil {
			t.Fatal(err)
		}
		return mdns.Peer{ID: id, Identity: pub, Username: name, Addrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/udp/9/quic-v1")}}
	}
	stranger, friend := lanPeer("stranger"), lanPeer("friend")
	alice.n.AddPeer(friend.AddrInfo())
	for _, p := range []mdns.Peer{stranger, friend} {
		alice.n.onMDNS(mdns.Event{Kind: mdns.PeerFound, Peer: p})
		if !alice.n.host.Wanted(p.ID) {
			t.Fatalf("%s: not linked to when found", p.Username)
		}
		alice.n.onMDNS(mdns.Event{Kind: mdns.PeerLost, Peer: p})
	}
	if alice.n.host.Wanted(stranger.ID) {
		t.Error("a peer mDNS lost is still dialed")
	}
	if !alice.n.host.Wanted(friend.ID) {
		t.Error("a peer given with AddPeer is no longer dialed after mDNS lost it")
	}
}

// TestHeldDelivery: a message to a peer that is gone is kept, the node
// says so (Delivery "waiting", and /history marks the message), and it
// goes out when the peer is back, which the node says too.
func TestHeldDelivery(t *testing.T) {
	leakCheck(t)
	alice, bob := newNode(t, "alice", nil), newNode(t, "bob", nil)
	link(alice, bob)
	ctx := context.Background()
	if _, err := alice.n.DM(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	wait(bob, "DM with alice", func(c Conversation) bool { return c.Name == "alice" && c.Status == "active" })
	first, err := alice.n.Send("bob", "before")
	if err != nil {
		t.Fatal(err)
	}
	wait(alice, "sent", func(s Sent) bool { return s.ID == first })

	bob.stop()
	wait(alice, "bob's link down", func(p Peer) bool { return p.User == "bob" && p.Link == "down" })
	held, err := alice.n.Send("bob", "are you there?")
	if err != nil {
		t.Fatal(err)
	}
	d := wait(alice, "waiting", func(d Delivery) bool { return true })
	if d.State != DeliveryWaiting || d.To != "bob" || d.Conversation != "bob" || d.Code != "failed-precondition" ||
		d.Message != "not reachable: no link to the peer and no home server" {
		t.Fatalf("delivery %+v, want bob waiting", d)
	}
	hs, err := alice.n.History("bob", 10)
	if err != nil {
		t.Fatal(err)
	}
	marks := map[string][]string{}
	for _, h := range hs {
		marks[h.ID] = h.WaitingFor
	}
	if _, ok := marks[first]; !ok || len(marks[first]) > 0 || fmt.Sprint(marks[held]) != "[bob]" {
		t.Fatalf("history marks %v, want only the second message waiting for bob", marks)
	}

	bob.log.Reset()
	bob.start()
	link(bob, alice)
	bob.waitText("alice", "are you there?")
	d = wait(alice, "resumed", func(d Delivery) bool { return true })
	if d.State != DeliveryResumed || d.To != "bob" || d.Via != "direct" {
		t.Fatalf("delivery %+v, want bob resumed, direct", d)
	}
	wait(alice, "sent", func(s Sent) bool { return s.ID == held })
	hs, err = alice.n.History("bob", 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if len(h.WaitingFor) > 0 {
			t.Fatalf("%q still marked waiting for %v", h.Text, h.WaitingFor)
		}
	}
	for _, ev := range alice.log.All() {
		if d, ok := ev.(Delivery); ok {
			t.Fatalf("a third delivery event: %+v", d)
		}
	}
}

// TestErrorMessagesForPeople: an error event says what went wrong without
// the Go package prefixes of the node's own errors.
func TestErrorMessagesForPeople(t *testing.T) {
	for _, c := range []struct {
		err  error
		want Error
	}{
		{fmt.Errorf("%w: that is you", conv.ErrInvalid), Error{Code: "invalid-argument", Message: "invalid argument: that is you"}},
		{fmt.Errorf("%w: %q", conv.ErrNotFound, "x"), Error{Code: "not-found", Message: `no such conversation: "x"`}},
		{errNoPath, Error{Code: "failed-precondition", Message: "not reachable: no link to the peer and no home server"}},
		{errors.New("rpc: enqueue: resource-exhausted: inbox full"), Error{Code: "resource-exhausted", Message: "inbox full"}},
	} {
		if got := ErrorEvent(c.err); got != c.want {
			t.Errorf("ErrorEvent(%q) = %+v, want %+v", c.err, got, c.want)
		}
	}
}
