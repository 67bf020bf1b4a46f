package node

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	"go.uber.org/goleak"

	"github.com/quicproquo/qpq/node/internal/nodetest"
	"github.com/quicproquo/qpq/p2p"
)

const waitLimit = 30 * time.Second

func leakCheck(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// tnode is a Node on loopback, its events, and its lifecycle.
type tnode struct {
	t    *testing.T
	name string
	dir  string
	srv  *nodetest.Server
	n    *Node

	mu     sync.Mutex
	events []Event
	evCh   chan struct{}
	cancel context.CancelFunc
	done   chan error
}

func newNode(t *testing.T, name string, srv *nodetest.Server) *tnode {
	tn := &tnode{t: t, name: name, dir: t.TempDir(), srv: srv}
	tn.start()
	t.Cleanup(tn.stop)
	return tn
}

func (tn *tnode) start() {
	t := tn.t
	t.Helper()
	tn.evCh = make(chan struct{}, 1)
	cfg := Config{
		DataDir:     tn.dir,
		Username:    tn.name,
		NoMDNS:      true, // never multicast outside a namespace
		ListenAddrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/udp/0/quic-v1")},
		Link:        p2p.LinkConfig{Heartbeat: 200 * time.Millisecond, DeadAfter: time.Second, RedialMax: time.Second},
		OnEvent:     tn.onEvent,
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
	tn.mu.Lock()
	tn.events = nil
	tn.mu.Unlock()
	tn.start()
}

func (tn *tnode) onEvent(ev Event) {
	tn.mu.Lock()
	tn.events = append(tn.events, ev)
	tn.mu.Unlock()
	select {
	case tn.evCh <- struct{}{}:
	default:
	}
}

// wait returns (and removes) the first event match accepts.
func wait[T Event](tn *tnode, what string, match func(T) bool) T {
	tn.t.Helper()
	deadline := time.After(waitLimit)
	for {
		tn.mu.Lock()
		for i, ev := range tn.events {
			if e, ok := ev.(T); ok && (match == nil || match(e)) {
				tn.events = append(tn.events[:i:i], tn.events[i+1:]...)
				tn.mu.Unlock()
				return e
			}
		}
		tn.mu.Unlock()
		select {
		case <-tn.evCh:
		case <-deadline:
			tn.mu.Lock()
			var seen []string
			for _, ev := range tn.events {
				b, _ := MarshalEvent(ev)
				seen = append(seen, string(b))
			}
			tn.mu.Unlock()
			tn.t.Fatalf("%s: no %s; events: %v", tn.name, what, seen)
		}
	}
}

func (tn *tnode) errors() []Error {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	var out []Error
	for _, ev := range tn.events {
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
