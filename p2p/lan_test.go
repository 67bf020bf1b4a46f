package p2p_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quicproquo/qpq/internal/lan"
	"github.com/quicproquo/qpq/internal/lan/lantest"
)

// node is a "node" child as the test sees it.
type node struct {
	*lantest.Child
	startReply
	addr string // its LAN address
}

func startNode(t testing.TB, l *lan.LAN, i int, a startArgs) *node {
	t.Helper()
	n := &node{Child: lantest.Spawn(t, l, i, "node"), addr: l.Nodes[i].Addr.String()}
	if a.Listen == "" {
		a.Listen = n.addr
	}
	if a.Username == "" {
		a.Username = fmt.Sprintf("user%d", i)
	}
	n.Call("start", a, &n.startReply)
	return n
}

func (n *node) waitLink(peer, state string, within time.Duration) linkEvent {
	return lantest.WaitEvent(n.Child, within, func(ev linkEvent) bool {
		return ev.Type == "link" && ev.Peer == peer && ev.State == state
	})
}

func (n *node) fetchKP(t testing.TB, peer string) string {
	t.Helper()
	var kp string
	n.Call("fetch_kp", peerArgs{Peer: peer}, &kp)
	return kp
}

// A finds B by mDNS and calls NodeService on B directly over
// /quicproquo/p2p/1: it gets B's key package, and B's inbox records A's
// identity as the sender of what A enqueued.
func TestLANDirectRPC(t *testing.T) {
	lantest.VerifyNoLeaks(t)
	l := lantest.New(t, 2)
	a := startNode(t, l, 0, startArgs{Username: "alice", MDNS: true, Link: fastLinks})
	b := startNode(t, l, 1, startArgs{Username: "bob", MDNS: true, Link: fastLinks, KeyPackages: []string{"bob-kp-1", "bob-kp-2"}})

	ev := a.waitLink(b.Peer, "direct", 10*time.Second)
	if !strings.HasPrefix(ev.Addr, "/ip4/"+b.addr+"/udp/") {
		t.Errorf("A's link to B is on %s, want B's LAN address %s", ev.Addr, b.addr)
	}
	if kp := a.fetchKP(t, b.Peer); kp != "bob-kp-1" {
		t.Fatalf("fetchKeyPackage = %q, want bob-kp-1", kp)
	}
	var seq uint64
	a.Call("enqueue", peerArgs{Peer: b.Peer, Payload: "hello bob"}, &seq)
	d := lantest.WaitEvent(b.Child, 5*time.Second, func(d deliveryEvent) bool { return d.Type == "delivery" })
	if d.Sender != a.Identity || d.Payload != "hello bob" || d.Seq != seq {
		t.Fatalf("B got %+v; want seq %d from A (%s)", d, seq, a.Identity)
	}
	// B sees the link too (A dialed in; B also found A by mDNS).
	b.waitLink(a.Peer, "direct", 10*time.Second)
}

// Both nodes call createChannel on each other at the same instant, over
// and over: every time one channel id and exactly one wasNew.
func TestLANConcurrentCreateChannel(t *testing.T) {
	lantest.VerifyNoLeaks(t)
	l := lantest.New(t, 2)
	a := startNode(t, l, 0, startArgs{Link: fastLinks})
	b := startNode(t, l, 1, startArgs{Link: fastLinks})
	// Each knows the other's address, as after mDNS.
	a.Call("add_peer", json.RawMessage(b.AddrInfo), nil)
	b.Call("add_peer", json.RawMessage(a.AddrInfo), nil)
	a.waitLink(b.Peer, "direct", 10*time.Second)
	b.waitLink(a.Peer, "direct", 10*time.Second)

	const rounds = 60
	newA := 0
	for i := range rounds {
		at := time.Now().Add(20 * time.Millisecond).UnixNano()
		var ra, rb channelReply
		var ea, eb error
		var wg sync.WaitGroup
		wg.Add(2)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		go func() { defer wg.Done(); ea = a.Do(ctx, "open_channel", peerArgs{Peer: b.Peer, AtNS: at}, &ra) }()
		go func() { defer wg.Done(); eb = b.Do(ctx, "open_channel", peerArgs{Peer: a.Peer, AtNS: at}, &rb) }()
		wg.Wait()
		cancel()
		if ea != nil || eb != nil {
			t.Fatalf("round %d: %v / %v", i, ea, eb)
		}
		if ra.ID != rb.ID || ra.WasNew == rb.WasNew {
			t.Fatalf("round %d: A got (%s, wasNew=%v), B got (%s, wasNew=%v)", i, ra.ID, ra.WasNew, rb.ID, rb.WasNew)
		}
		if ra.WasNew {
			newA++
		}
		a.Call("forget_channel", peerArgs{Peer: b.Peer}, nil)
		b.Call("forget_channel", peerArgs{Peer: a.Peer}, nil)
	}
	// Simultaneous opens go to the lower identity key; sequential ones to
	// whoever called first. Both kinds happen here.
	lower := "A"
	if b.Identity < a.Identity {
		lower = "B"
	}
	t.Logf("%d rounds: A initiated %d, B %d; the lower key is %s's", rounds, newA, rounds-newA, lower)
}

// A and B are blocked from each other but both reach a home server's
// relay: they get a relayed link through it, RPC works over it, and when
// the block lifts the link becomes direct.
func TestLANRelayedThenDirect(t *testing.T) {
	lantest.VerifyNoLeaks(t)
	l := lantest.New(t, 3)
	ctx := lantest.Context(t, 2*time.Minute)
	if err := l.Block(ctx, 1, 2); err != nil {
		t.Fatal(err)
	}
	home := startNode(t, l, 0, startArgs{Username: "home", RelayService: true, Link: fastLinks})
	relays := []json.RawMessage{home.AddrInfo}
	a := startNode(t, l, 1, startArgs{Relays: relays, Link: fastLinks})
	b := startNode(t, l, 2, startArgs{Relays: relays, Link: fastLinks, KeyPackages: []string{"kp-1", "kp-2"}})

	// B's endpoint now includes a circuit through the home server; A
	// learns it (as it would by resolveEndpoint) and links up.
	var bInfo json.RawMessage
	b.Call("wait_circuit", nil, &bInfo)
	a.Call("add_peer", bInfo, nil)
	ev := a.waitLink(b.Peer, "relayed", 15*time.Second)
	if !strings.Contains(ev.Addr, "/p2p-circuit") || !strings.Contains(ev.Addr, home.Peer) {
		t.Errorf("relayed link on %s, want a circuit through %s", ev.Addr, home.Peer)
	}
	var kp string
	if err := a.Do(ctx, "fetch_kp", peerArgs{Peer: b.Peer}, &kp); err != nil || kp != "kp-1" {
		for _, n := range l.Nodes {
			out, _ := exec.Command("ip", "-n", n.NS, "rule", "list").CombinedOutput()
			t.Logf("%s rules:\n%s", n.NS, out)
		}
		t.Fatalf("fetchKeyPackage over the relay = %q, %v", kp, err)
	}

	if err := l.Unblock(ctx, 1, 2); err != nil {
		t.Fatal(err)
	}
	ev = a.waitLink(b.Peer, "direct", 20*time.Second)
	if !strings.HasPrefix(ev.Addr, "/ip4/"+b.addr+"/") {
		t.Errorf("direct link on %s, want B's address %s", ev.Addr, b.addr)
	}
	if kp := a.fetchKP(t, b.Peer); kp != "kp-2" {
		t.Fatalf("fetchKeyPackage after the upgrade = %q", kp)
	}
}

// A link whose path is cut is reported down within a few seconds, and
// redialed, and reported direct, when the path comes back.
func TestLANLinkCutAndRedial(t *testing.T) {
	lantest.VerifyNoLeaks(t)
	l := lantest.New(t, 2)
	ctx := lantest.Context(t, 2*time.Minute)
	a := startNode(t, l, 0, startArgs{Link: fastLinks})
	b := startNode(t, l, 1, startArgs{Link: fastLinks, KeyPackages: []string{"kp-1"}})
	a.Call("add_peer", json.RawMessage(b.AddrInfo), nil)
	a.waitLink(b.Peer, "direct", 10*time.Second)

	if err := l.Cut(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// Heartbeat 300 ms + DeadAfter 1 s; the bound leaves room for a
	// loaded machine.
	a.waitLink(b.Peer, "down", 10*time.Second)
	if err := l.Restore(ctx, 1); err != nil {
		t.Fatal(err)
	}
	a.waitLink(b.Peer, "direct", 15*time.Second)
	if kp := a.fetchKP(t, b.Peer); kp != "kp-1" {
		t.Fatalf("fetchKeyPackage after redial = %q", kp)
	}
}

// BenchmarkLANDirectRPC compares a NodeService round trip over the P2P
// link between two namespaces with a bare UDP ping-pong over the same
// veth and bridge, interleaved in the same run (target: RPC p50 within
// 3x). scripts/bench-p2p runs it.
func BenchmarkLANDirectRPC(b *testing.B) {
	l := lantest.New(b, 2)
	a := startNode(b, l, 0, startArgs{Link: fastLinks})
	peer := startNode(b, l, 1, startArgs{Link: fastLinks})
	peer.Call("udp_echo", peerArgs{UDPAddr: peer.addr}, nil)
	a.Call("add_peer", json.RawMessage(peer.AddrInfo), nil)
	a.waitLink(peer.Peer, "direct", 10*time.Second)
	var udp, stream, rpc []time.Duration
	for b.Loop() {
		var r benchReply
		a.Call("bench", peerArgs{Peer: peer.Peer, UDPAddr: peer.addr, N: 200}, &r)
		udp, stream, rpc = append(udp, r.UDP...), append(stream, r.Stream...), append(rpc, r.RPC...)
	}
	u50, u99 := lantest.Percentiles(udp)
	s50, _ := lantest.Percentiles(stream)
	r50, r99 := lantest.Percentiles(rpc)
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }
	b.ReportMetric(us(u50), "udp-p50-µs")
	b.ReportMetric(us(u99), "udp-p99-µs")
	b.ReportMetric(us(r50), "rpc-p50-µs")
	b.ReportMetric(us(r99), "rpc-p99-µs")
	b.ReportMetric(us(s50), "stream-p50-µs")
	b.ReportMetric(float64(r50)/float64(u50), "rpc/udp-p50")
	b.ReportMetric(float64(s50)/float64(u50), "stream/udp-p50")
	b.ReportMetric(0, "ns/op")
}
