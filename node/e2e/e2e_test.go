package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quicproquo/qpq/internal/lan"
	"github.com/quicproquo/qpq/internal/lan/lantest"
)

// linkedPair starts alice and bob in namespaces 0 and 1 (with the home
// server srv unless empty) and waits until they are ready and linked.
func linkedPair(t testing.TB, l *lan.LAN, srv string) (alice, bob *chat) {
	t.Helper()
	alice, bob = startChat(t, l, 0, "alice", srv), startChat(t, l, 1, "bob", srv)
	alice.ready()
	bob.ready()
	alice.sees("bob")
	bob.sees("alice")
	return alice, bob
}

// dm opens the DM between a and b from both sides and waits until both
// are in it.
func dm(t testing.TB, a, b *chat) {
	t.Helper()
	a.command("/dm " + b.user)
	b.command("/dm " + a.user)
	a.conv(b.user, members(2))
	b.conv(a.user, members(2))
}

// group has the first chat create the group and invite the others, and
// waits until everyone is in it.
func group(t *testing.T, name string, cs ...*chat) {
	t.Helper()
	cs[0].command("/group create " + name)
	for i, o := range cs[1:] {
		cs[0].command("/invite " + o.user)
		cs[0].conv(name, members(i+2))
		o.conv(name, nil)
	}
	for _, o := range cs[1:] {
		o.command("/switch " + name)
	}
}

func texts(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s %d", prefix, i)
	}
	return out
}

// TestLANOnly (issue proof 1): alice, bob and carol in three namespaces,
// no server. A DM between alice and bob and a three-member group: every
// message arrives decrypted, exactly once, in order, over direct links.
func TestLANOnly(t *testing.T) {
	l := newLAN(t, 3)
	alice, bob, carol := startChat(t, l, 0, "alice", ""), startChat(t, l, 1, "bob", ""), startChat(t, l, 2, "carol", "")
	all := []*chat{alice, bob, carol}
	for _, c := range all {
		c.ready()
		for _, o := range all {
			if o != c {
				c.sees(o.user)
			}
		}
	}

	dm(t, alice, bob)
	ab, ba := texts("alice to bob", 10), texts("bob to alice", 10)
	for i := range ab {
		alice.say(ab[i])
		bob.say(ba[i])
	}
	for i := range ab {
		if m := bob.got("alice", ab[i]); m.Via != "direct" || m.From != "alice" {
			t.Errorf("bob got %v", m)
		}
		alice.got("bob", ba[i])
	}

	group(t, "crew", alice, bob, carol)
	sent := map[string][]string{}
	for i := range 5 {
		for _, c := range all {
			text := fmt.Sprintf("%s in crew %d", c.user, i)
			c.say(text)
			sent[c.user] = append(sent[c.user], text)
		}
	}
	for _, c := range all {
		for _, o := range all {
			if o == c {
				continue
			}
			for _, text := range sent[o.user] {
				if m := c.got("crew", text); m.Via != "direct" {
					t.Errorf("%s got %q via %s", c.user, text, m.Via)
				}
			}
		}
	}
	inOrder(t, bob, "alice", "alice", ab)
	inOrder(t, alice, "bob", "bob", ba)
	for _, c := range all {
		for _, o := range all {
			if o != c {
				inOrder(t, c, "crew", o.user, sent[o.user])
			}
		}
		checkOnce(t, c)
	}
	noErrors(t, all...)
}

// TestOfflineThroughServer (issue proof 2): with a home server in a fourth
// namespace, bob's node is stopped; alice sends 20 messages; bob starts
// again and receives all 20 from the home server, exactly once, in order.
func TestOfflineThroughServer(t *testing.T) {
	l := newLAN(t, 4)
	srv := server(t, l, 3)
	alice, bob := startChat(t, l, 0, "alice", srv), startChat(t, l, 1, "bob", srv)
	for _, c := range []*chat{alice, bob} {
		if p := c.wait("pin", func(e event) bool { return e.Type == "pin" }); !p.First || p.Server != srv {
			t.Fatalf("%s: pin %v", c.user, p)
		}
		c.ready()
	}
	dm(t, alice, bob)

	bob.stop()
	want := texts("while bob is away", 20)
	for _, text := range want {
		id := alice.say(text)
		if s := alice.wait("sent "+text, func(e event) bool { return e.Type == "sent" && e.ID == id }); s.Via != "server" {
			t.Fatalf("%q sent via %s while bob is down", text, s.Via)
		}
	}
	bob.start()
	bob.ready()
	bob.gotVia("alice", "server", want)
	bob.command("/switch alice")
	bob.say("back")
	alice.got("bob", "back")
	inOrder(t, bob, "alice", "alice", want)
	checkOnce(t, bob)
	noErrors(t, alice, bob)
}

// TestHomeServerCrash: the home server both nodes use is killed (no
// connection closed, nothing flushed beyond what it acknowledged) and
// started again on the same data. Both nodes carry on through it without
// a restart of their own: the new run answers each node's next packet on
// its old connection with a stateless reset (alice's next send, bob's
// next keep-alive), so both dial again well before the 90 s idle timeout
// would have told them; what alice sent after the crash reaches bob, in
// order, exactly once.
func TestHomeServerCrash(t *testing.T) {
	l := newLAN(t, 3)
	if err := l.Block(lantest.Context(t, time.Minute), 0, 1); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, l, 2, filepath.Join(t.TempDir(), "server"))
	// --server-only: no relayed link through the server's circuit relay,
	// so every message goes through its store.
	alice, bob := startChat(t, l, 0, "alice", srv.addr, "--server-only"), startChat(t, l, 1, "bob", srv.addr, "--server-only")
	alice.ready()
	bob.ready()
	dm(t, alice, bob)
	alice.say("before the crash")
	bob.got("alice", "before the crash")

	srv.kill()
	srv.start()
	want := texts("after the crash", 5)
	for _, text := range want {
		sentVia(t, alice, alice.say(text), "bob")
	}
	bob.gotVia("alice", "server", want)
	bob.command("/switch alice")
	bob.say("back")
	alice.got("bob", "back")
	inOrder(t, bob, "alice", "alice", append([]string{"before the crash"}, want...))
	checkOnce(t, bob)
	noErrors(t, alice, bob)
}

// TestFailover (issue proof 3): mid-conversation the direct path between
// alice and bob is cut (both still reach the home server); the next
// messages go through the home server; when the path returns, traffic
// goes direct again. Nothing is lost or shown twice. The delay from a
// send on the cut path to its arrival is logged; the benchmark measures
// it (target < 2 s).
func TestFailover(t *testing.T) {
	l := newLAN(t, 4)
	alice, bob := linkedPair(t, l, server(t, l, 3))
	dm(t, alice, bob)
	var want []string
	send := func(text, via string) event {
		start := time.Now()
		alice.say(text)
		want = append(want, text)
		m := bob.got("alice", text)
		t.Logf("%s: %q sent, arrived via %s after %v", start.Format("15:04:05.000"), text, m.Via, m.at.Sub(start))
		if via != "" && m.Via != via {
			t.Errorf("%q arrived via %s, want %s", text, m.Via, via)
		}
		return m
	}
	// Links settle after start (nodes dial each other at once, so there
	// may be two connections, one of which goes): wait until messages go
	// direct before cutting the path.
	directRun := func(prefix string) {
		t.Helper()
		untilDirect(t, prefix, func(text string) event { return send(text, "") })
	}
	directRun("before the cut ")

	ctx := lantest.Context(t, time.Minute)
	alice.forget("peer") // link changes seen so far are not the cut's
	if err := l.Block(ctx, 0, 1); err != nil {
		t.Fatal(err)
	}
	send("after the cut 0", "server")
	for i := 1; i < 5; i++ {
		send(fmt.Sprint("after the cut ", i), "server")
	}
	// Wait until the link has been seen to fail, so that its return is a
	// new link.
	alice.wait("link to bob down", func(e event) bool { return e.Type == "peer" && e.User == "bob" && e.Link == "down" })
	alice.forget("peer")
	if err := l.Unblock(ctx, 0, 1); err != nil {
		t.Fatal(err)
	}
	alice.sees("bob")
	directRun("path back ")
	inOrder(t, bob, "alice", "alice", want)
	checkOnce(t, bob)
	noErrors(t, alice, bob)
}

// TestSimultaneousDM (issue proof 4): both sides run /dm at the same
// moment: exactly one group, and both can talk.
func TestSimultaneousDM(t *testing.T) {
	l := newLAN(t, 4)
	alice, bob := linkedPair(t, l, server(t, l, 3))
	var wg sync.WaitGroup
	for _, p := range [][2]*chat{{alice, bob}, {bob, alice}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p[0].do("/dm " + p[1].user)
		}()
	}
	wg.Wait()
	for _, c := range []*chat{alice, bob} {
		if e := c.wait("/dm answer", func(e event) bool { return e.Command == "dm" }); e.Type != "done" {
			t.Fatalf("%s: /dm: %v", c.user, e)
		}
	}
	a := alice.conv("bob", members(2))
	b := bob.conv("alice", members(2))
	if a.ID != b.ID {
		t.Fatalf("two groups: alice's %s, bob's %s", a.ID, b.ID)
	}
	alice.say("hello from alice")
	bob.say("hello from bob")
	bob.got("alice", "hello from alice")
	alice.got("bob", "hello from bob")
	for _, c := range []*chat{alice, bob} {
		if convs := c.list(); len(convs) != 1 || convs[0].ID != a.ID {
			t.Errorf("%s lists %v, want the one DM", c.user, convs)
		}
	}
	noErrors(t, alice, bob)
}

// TestRestart (issue proof 5): alice's node is killed mid-group and
// started again on its data; it continues — sends and receives — without
// joining again. What bob and carol sent while it was down arrives once it
// is back (their outboxes kept it; no server).
func TestRestart(t *testing.T) {
	l := newLAN(t, 3)
	alice, bob, carol := startChat(t, l, 0, "alice", ""), startChat(t, l, 1, "bob", ""), startChat(t, l, 2, "carol", "")
	all := []*chat{alice, bob, carol}
	for _, c := range all {
		c.ready()
		for _, o := range all {
			if o != c {
				c.sees(o.user)
			}
		}
	}
	group(t, "crew", alice, bob, carol)
	alice.command("/switch crew")
	before := alice.conv("crew", members(3))
	alice.say("before the crash")
	bob.got("crew", "before the crash")
	carol.got("crew", "before the crash")

	alice.kill()
	bob.say("while alice is down")
	carol.say("also while alice is down")
	alice.start()
	alice.ready()
	alice.got("crew", "while alice is down")
	alice.got("crew", "also while alice is down")
	alice.command("/switch crew")
	after := alice.conv("crew", members(3))
	if after.ID != before.ID || after.Epoch != before.Epoch {
		t.Errorf("alice's group changed across the restart: %v → %v", before, after)
	}
	alice.say("after the restart")
	bob.got("crew", "after the restart")
	carol.got("crew", "after the restart")
	for _, c := range all {
		checkOnce(t, c)
	}
	noErrors(t, all...)
}

// TestRemoval (issue proof 6): carol is removed and cannot read later
// messages: she is told she was removed, gets no message sent after, and
// cannot send to the group.
func TestRemoval(t *testing.T) {
	l := newLAN(t, 3)
	alice, bob, carol := startChat(t, l, 0, "alice", ""), startChat(t, l, 1, "bob", ""), startChat(t, l, 2, "carol", "")
	all := []*chat{alice, bob, carol}
	for _, c := range all {
		c.ready()
		for _, o := range all {
			if o != c {
				c.sees(o.user)
			}
		}
	}
	group(t, "crew", alice, bob, carol)
	alice.say("all three of us")
	carol.got("crew", "all three of us")

	alice.command("/remove carol")
	carol.conv("crew", func(e event) bool { return e.Status == "removed" })
	bob.conv("crew", members(2))
	alice.say("carol must not read this")
	bob.got("crew", "carol must not read this")
	bob.say("nor this")
	alice.got("crew", "nor this")

	carol.do("after removal")
	if e := carol.wait("refusal", func(e event) bool { return e.Type == "error" && e.Command == "send" }); e.Code != "failed-precondition" {
		t.Errorf("carol's send after removal: %v", e)
	}
	// By now alice's and bob's later messages have been delivered to
	// everyone they were for; carol's output must not show them.
	for _, m := range carol.messages() {
		if m.Text == "carol must not read this" || m.Text == "nor this" {
			t.Errorf("carol read %q", m.Text)
		}
	}
	noErrors(t, alice, bob)
}

// TestRelayedAcrossBlockedPaths: alice and bob cannot reach each other at
// all (no mDNS, no packets) but both reach their home server, which they
// were given only as --server. Each learns the server's circuit relay
// from serverInfo and holds a reservation there; each finds the other's
// endpoint record at the server once they share a conversation; they
// link through the relay and messages go over that link, not into the
// server's store.
func TestRelayedAcrossBlockedPaths(t *testing.T) {
	l := newLAN(t, 3)
	srv := server(t, l, 2)
	if err := l.Block(lantest.Context(t, time.Minute), 0, 1); err != nil {
		t.Fatal(err)
	}
	alice, bob := startChat(t, l, 0, "alice", srv), startChat(t, l, 1, "bob", srv)
	alice.ready()
	bob.ready()
	dm(t, alice, bob)
	relayed := func(who string) func(event) bool {
		return func(e event) bool { return e.Type == "peer" && e.User == who && e.Link == "relayed" }
	}
	alice.wait("relayed link to bob", relayed("bob"))
	bob.wait("relayed link to alice", relayed("alice"))

	// The first messages may still go through the store while the link
	// settles; then three in a row must arrive over the link.
	var want []string
	untilDirect(t, "through the relay ", func(text string) event {
		alice.say(text)
		want = append(want, text)
		return bob.got("alice", text)
	})
	bob.say("and back")
	if m := alice.got("bob", "and back"); m.Via != "direct" {
		t.Errorf("bob's answer arrived via %s, want over the relayed link", m.Via)
	}
	for _, c := range []*chat{alice, bob} {
		for _, e := range c.printed("peer") { // c.all is the reader's, under c.mu
			if e.Link == "direct" && (e.User == "alice" || e.User == "bob") {
				t.Errorf("%s: a direct link across the block: %v", c.user, e)
			}
			if strings.HasPrefix(e.User, "id:") {
				t.Errorf("%s: shown a peer without a name (the relay?): %v", c.user, e)
			}
		}
	}
	inOrder(t, bob, "alice", "alice", want)
	checkOnce(t, bob)
	noErrors(t, alice, bob)
}

// untilDirect sends prefix+i for i = 0, 1, … with send (which returns the
// arrival) until three in a row arrived over a P2P link ("direct";
// through a relay too), and fails after waitLimit. Links settle after
// they come up (both sides may dial at once, and one of two connections
// goes), and a failed direct try rests the path for a while.
func untilDirect(t *testing.T, prefix string, send func(text string) event) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for i, run := 0, 0; run < 3; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("%snever 3 messages in a row over a P2P link within %v", prefix, waitLimit)
		}
		if m := send(fmt.Sprint(prefix, i)); m.Via == "direct" {
			run++
		} else {
			run = 0
			time.Sleep(200 * time.Millisecond)
		}
	}
}
