package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/quicproquo/qpq/internal/lan"
	"github.com/quicproquo/qpq/internal/lan/lantest"
	"github.com/quicproquo/qpq/rpc"
)

// federated is two home servers of different domains that pin each
// other, and one user at each who cannot reach the other but through the
// two servers.
type federated struct {
	a, b       *serve
	alice, bob *chat
	ids        map[*chat]string // the identity of the other user
}

// Where the federated setup puts everything: alice and bob in namespaces
// 0 and 1, the servers of a.test and b.test in 2 and 3.
const (
	fedAlice, fedBob, fedA, fedB = 0, 1, 2, 3
	aliceName, bobName           = "alice@a.test", "bob@b.test"
)

// federate starts a.test's and b.test's servers, each listing the other as
// its federation peer (domain, federation address, pinned fingerprint, as
// docs/OPERATIONS.md tells operators), blocks alice's and bob's
// namespaces from each other, and starts alice at a.test and bob at
// b.test without mDNS, so that nothing goes peer to peer.
func federate(t *testing.T, l *lan.LAN) *federated {
	t.Helper()
	// Each server's certificate is made where `qpq serve` makes it on first
	// start (DATA/tls/), so its fingerprint is known before either starts.
	dirs, fps := map[int]string{}, map[int]string{}
	for _, n := range []int{fedA, fedB} {
		dirs[n] = filepath.Join(t.TempDir(), "server")
		cert, err := rpc.LoadOrCreateCertificate(dirs[n])
		if err != nil {
			t.Fatal(err)
		}
		fps[n] = rpc.CertificateFingerprint(cert).String()
	}
	conf := func(peer int, peerDomain string) string {
		path := filepath.Join(t.TempDir(), "qpq.toml")
		// A short retry_max keeps the wait after a peer returns short.
		toml := fmt.Sprintf("[federation]\nretry_max = \"1s\"\n\n[[federation.peers]]\ndomain = %q\naddress = \"%s:7445\"\nfingerprint = %q\n",
			peerDomain, l.Nodes[peer].Addr, fps[peer])
		if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	f := &federated{
		a: startServer(t, l, fedA, dirs[fedA], "--domain", "a.test", "--config", conf(fedB, "b.test")),
		b: startServer(t, l, fedB, dirs[fedB], "--domain", "b.test", "--config", conf(fedA, "a.test")),
	}
	if err := l.Block(lantest.Context(t, time.Minute), fedAlice, fedBob); err != nil {
		t.Fatal(err)
	}
	f.alice = startChat(t, l, fedAlice, "alice", f.a.addr, "--mdns=false")
	f.bob = startChat(t, l, fedBob, "bob", f.b.addr, "--mdns=false")
	f.ids = map[*chat]string{f.alice: f.bob.ready().Identity, f.bob: f.alice.ready().Identity}
	return f
}

// dm opens the DM: alice by bob's name@domain; bob, who never looked
// alice up, sees it under her name@domain (his server asks hers to name
// the sender) and then opens it by that name.
func (f *federated) dm() {
	f.alice.t.Helper()
	f.alice.command("/dm " + bobName)
	f.alice.conv(bobName, members(2))
	f.bob.conv(aliceName, members(2))
	f.bob.command("/dm " + aliceName)
}

// viaServer fails on any message of the DM that did not come through the
// home server, and on any link between alice and bob (each has one to its
// home server's libp2p host, for the circuit relay).
func (f *federated) viaServer(t *testing.T) {
	t.Helper()
	for _, c := range []*chat{f.alice, f.bob} {
		for _, m := range c.messages() {
			if m.Via != "server" {
				t.Errorf("%s got %q via %s, want server", c.user, m.Text, m.Via)
			}
		}
		for _, e := range c.printed("peer") {
			if e.Identity == f.ids[c] && (e.Link == "direct" || e.Link == "relayed") {
				t.Errorf("%s: a link across the block: %v", c.user, e)
			}
		}
	}
}

// sentVia waits for the sent event of message id and fails unless it
// was stored by the home server for to.
func sentVia(t *testing.T, c *chat, id, to string) {
	t.Helper()
	s := c.wait("sent "+id, func(e event) bool { return e.Type == "sent" && e.ID == id })
	if s.Via != "server" || s.To != to {
		t.Errorf("%s: message %s sent via %s to %q, want via server to %q", c.user, id, s.Via, s.To, to)
	}
}

// TestFederatedDM (issue 7, for real users): alice at a.test and bob at
// b.test, who cannot reach each other, open a DM by name@domain; each
// talks only to its own home server, the servers relay to each other, and
// every message arrives decrypted, exactly once, in order, via the server.
func TestFederatedDM(t *testing.T) {
	l := newLAN(t, 4)
	f := federate(t, l)
	f.dm()

	ab, ba := texts("alice to bob", 10), texts("bob to alice", 10)
	for i := range ab {
		sentVia(t, f.alice, f.alice.say(ab[i]), bobName)
		sentVia(t, f.bob, f.bob.say(ba[i]), aliceName)
	}
	for i := range ab {
		if m := f.bob.got(aliceName, ab[i]); m.From != aliceName {
			t.Errorf("bob got %v", m)
		}
		if m := f.alice.got(bobName, ba[i]); m.From != bobName {
			t.Errorf("alice got %v", m)
		}
	}
	inOrder(t, f.bob, aliceName, aliceName, ab)
	inOrder(t, f.alice, bobName, bobName, ba)
	checkOnce(t, f.alice)
	checkOnce(t, f.bob)
	f.viaServer(t)
	noErrors(t, f.alice, f.bob)
}

// TestFederatedDMPeerServerDown: bob's home server is stopped while
// alice sends; a.test acknowledges each message into its queue for
// b.test, and once b.test is back every message reaches bob exactly once,
// in order.
func TestFederatedDMPeerServerDown(t *testing.T) {
	l := newLAN(t, 4)
	f := federate(t, l)
	f.dm()
	f.alice.say("before")
	f.bob.got(aliceName, "before")

	f.b.stop()
	want := texts("while b.test is down", 10)
	for _, text := range want {
		sentVia(t, f.alice, f.alice.say(text), bobName)
	}
	f.b.start()
	for _, text := range want {
		f.bob.got(aliceName, text)
	}
	f.bob.say("back")
	f.alice.got(bobName, "back")
	inOrder(t, f.bob, aliceName, aliceName, append([]string{"before"}, want...))
	checkOnce(t, f.bob)
	checkOnce(t, f.alice)
	f.viaServer(t)
	noErrors(t, f.alice, f.bob)
}
