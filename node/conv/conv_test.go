package conv

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/quicproquo/qpq/mls"
	"github.com/quicproquo/qpq/node/history"
	"github.com/quicproquo/qpq/node/internal/nodetest"
	"github.com/quicproquo/qpq/node/keys"
	"github.com/quicproquo/qpq/node/outbox"
)

// waitLimit bounds how long a test waits for something that must happen;
// reaching it is a failure, never a measurement.
const waitLimit = 20 * time.Second

// net is an in-memory network of Managers: what one node's outbox
// delivers reaches the recipient's Handle, at once (auto) or when the test
// releases it.
type net struct {
	t testing.TB

	mu      sync.Mutex        // guards the fields below
	nodes   map[string]*tnode // by identity
	auto    bool
	dup     bool // deliver every item twice, once per path
	pending []delivery
}

type delivery struct {
	from, to *tnode
	item     outbox.Item
}

type tnode struct {
	name string
	dir  string
	id   ed25519.PublicKey
	priv ed25519.PrivateKey
	n    *net
	db   *bolt.DB
	keys *keys.Stock
	out  *outbox.Outbox
	hist *history.History
	wg   sync.WaitGroup

	up     sync.RWMutex // guards m and cancel: held for writing while (re)starting
	m      *Manager
	cancel context.CancelFunc

	log nodetest.Log[Event]
}

func newNet(t testing.TB) *net {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
	return &net{t: t, nodes: map[string]*tnode{}, auto: true}
}

func (n *net) add(name string) *tnode {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	tn := &tnode{name: name, dir: n.t.TempDir(), id: priv.Public().(ed25519.PublicKey), priv: priv, n: n}
	tn.open()
	n.mu.Lock()
	n.nodes[string(tn.id)] = tn
	n.mu.Unlock()
	n.t.Cleanup(tn.close)
	return tn
}

func (tn *tnode) open() {
	tn.up.Lock()
	defer tn.up.Unlock()
	t := tn.n.t
	var err error
	if tn.db, err = bolt.Open(filepath.Join(tn.dir, "node.db"), 0o600, nil); err != nil {
		t.Fatal(err)
	}
	if tn.keys, err = keys.New(tn.db, tn.priv, []mls.ExtensionType{ExtensionType}); err != nil {
		t.Fatal(err)
	}
	if tn.hist, err = history.New(tn.db); err != nil {
		t.Fatal(err)
	}
	if tn.out, err = outbox.New(tn.db, outbox.DeliverFunc(tn.deliver), outbox.Config{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	tn.m, err = New(Config{DB: tn.db, Keys: tn.keys, Outbox: tn.out, History: tn.hist, CommitDelay: time.Millisecond, OnEvent: tn.log.Add})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tn.cancel = cancel
	tn.wg.Add(2)
	go func() { defer tn.wg.Done(); tn.out.Run(ctx) }()
	go func() { defer tn.wg.Done(); tn.m.Run(ctx) }()
}

func (tn *tnode) close() {
	tn.up.Lock()
	defer tn.up.Unlock()
	if tn.cancel == nil {
		return
	}
	tn.cancel()
	tn.wg.Wait()
	tn.db.Close()
	tn.cancel = nil
}

// restart closes the node and opens it again from its data.
func (tn *tnode) restart() {
	tn.close()
	tn.log.Reset()
	tn.open()
}

func (tn *tnode) deliver(_ context.Context, it outbox.Item) (string, error) {
	n := tn.n
	n.mu.Lock()
	to := n.nodes[string(it.Recipient[:])]
	if to == nil {
		n.mu.Unlock()
		return "", outbox.Permanent(errors.New("no such node"))
	}
	auto, dup := n.auto, n.dup
	if !auto {
		n.pending = append(n.pending, delivery{tn, to, it})
	}
	n.mu.Unlock()
	if auto {
		if err := to.handle("direct", it.Data); err != nil {
			return "", err
		}
		if dup {
			if err := to.handle("server", it.Data); err != nil {
				return "", err
			}
		}
	}
	return outbox.ViaDirect, nil
}

func (tn *tnode) handle(via string, data []byte) error {
	tn.up.RLock()
	defer tn.up.RUnlock()
	if tn.cancel == nil {
		return errors.New("node is down")
	}
	return tn.m.Handle(via, data)
}

// hold stops automatic delivery: what outboxes deliver waits in pending.
func (n *net) hold() {
	n.mu.Lock()
	n.auto = false
	n.mu.Unlock()
}

// held waits until at least count deliveries are pending, and takes them.
func (n *net) held(count int) []delivery {
	n.t.Helper()
	var got []delivery
	for deadline := time.Now().Add(waitLimit); len(got) < count; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			n.t.Fatalf("%d deliveries, want %d", len(got), count)
		}
		n.mu.Lock()
		got = append(got, n.pending...)
		n.pending = nil
		n.mu.Unlock()
	}
	return got
}

// kp makes a KeyPackage of tn as a peer would fetch it.
func (tn *tnode) kp() *mls.KeyPackage {
	t := tn.n.t
	raw, err := tn.keys.Make(keys.PlacePeers, 1)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := keys.ParsePeerKeyPackage(raw[0], tn.id)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// waitEvent waits for an event match accepts and removes it.
func (tn *tnode) waitEvent(what string, match func(Event) bool) Event {
	tn.n.t.Helper()
	return tn.log.Wait(tn.n.t, tn.name+": "+what, waitLimit, match)
}

func (tn *tnode) waitText(text string) history.Message {
	tn.n.t.Helper()
	ev := tn.waitEvent("message "+text, func(ev Event) bool {
		r, ok := ev.(Received)
		return ok && r.Message.Text == text
	})
	return ev.(Received).Message
}

// waitConv waits for a Changed event of conversation id that check accepts.
func (tn *tnode) waitConv(id []byte, what string, check func(Conversation) bool) Conversation {
	tn.n.t.Helper()
	ev := tn.waitEvent(what, func(ev Event) bool {
		c, ok := ev.(Changed)
		return ok && bytes.Equal(c.Conversation.ID, id) && check(c.Conversation)
	})
	return ev.(Changed).Conversation
}

func (tn *tnode) texts() []string {
	var out []string
	for _, ev := range tn.log.All() {
		if r, ok := ev.(Received); ok {
			out = append(out, r.Message.Text)
		}
	}
	return out
}

func (tn *tnode) problems() []Problem {
	var out []Problem
	for _, ev := range tn.log.All() {
		if p, ok := ev.(Problem); ok {
			out = append(out, p)
		}
	}
	return out
}

func members(n int) func(Conversation) bool {
	return func(c Conversation) bool { return len(c.Members) == n && c.Status == StatusActive }
}

func (tn *tnode) send(id []byte, text string) {
	tn.n.t.Helper()
	if _, err := tn.m.Send(id, text); err != nil {
		tn.n.t.Fatalf("%s: send %q: %v", tn.name, text, err)
	}
}

// group makes a group of the given nodes, created by the first, and waits
// until everyone is in it.
func group(t testing.TB, name string, nodes ...*tnode) []byte {
	t.Helper()
	c, err := nodes[0].m.CreateGroup(name)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range nodes[1:] {
		if err := nodes[0].m.Invite(c.ID, o.kp()); err != nil {
			t.Fatal(err)
		}
		o.waitConv(c.ID, "join", func(c Conversation) bool { return c.Name == name })
		nodes[0].waitConv(c.ID, "add", members(i+2))
	}
	return c.ID
}

func TestDM(t *testing.T) {
	n := newNet(t)
	alice, bob := n.add("alice"), n.add("bob")
	if _, err := bob.m.ExpectDM(alice.id); err != nil {
		t.Fatal(err)
	}
	dm, err := alice.m.CreateDM(bob.id, bob.kp())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dm.ID, bob.m.DMID(alice.id)) || dm.Kind != KindDirect {
		t.Fatalf("DM %x of kind %v, want the channel id %x", dm.ID, dm.Kind, bob.m.DMID(alice.id))
	}
	got := bob.waitConv(dm.ID, "DM joined", members(2))
	if !bytes.Equal(got.Peer, alice.id) || got.Kind != KindDirect {
		t.Fatal("bob's DM is not with alice")
	}
	alice.send(dm.ID, "hi bob")
	m := bob.waitText("hi bob")
	if !bytes.Equal(m.Sender[:], alice.id) || m.Via != "direct" {
		t.Fatalf("message from %x via %q", m.Sender[:4], m.Via)
	}
	bob.send(dm.ID, "hi alice")
	alice.waitText("hi alice")
	// A second CreateDM is the same conversation, unchanged.
	again, err := alice.m.CreateDM(bob.id, bob.kp())
	if err != nil || again.Epoch != dm.Epoch {
		t.Fatalf("second CreateDM: epoch %d, err %v", again.Epoch, err)
	}
	if h, _ := bob.hist.Last(dm.ID, 10); len(h) != 2 {
		t.Fatalf("bob's history has %d messages, want 2", len(h))
	}
}

// TestDuplicatesShownOnce: every message arrives by two paths; each text
// is reported once and nothing else complains.
func TestDuplicatesShownOnce(t *testing.T) {
	n := newNet(t)
	n.dup = true
	alice, bob, carol := n.add("alice"), n.add("bob"), n.add("carol")
	id := group(t, "dups", alice, bob, carol)
	for i := range 5 {
		alice.send(id, fmt.Sprint("a", i))
		bob.send(id, fmt.Sprint("b", i))
	}
	for i := range 5 {
		carol.waitText(fmt.Sprint("a", i))
		carol.waitText(fmt.Sprint("b", i))
		alice.waitText(fmt.Sprint("b", i))
		bob.waitText(fmt.Sprint("a", i))
	}
	if err := alice.m.UpdateKey(id); err != nil {
		t.Fatal(err)
	}
	carol.send(id, "after the update")
	alice.waitText("after the update")
	bob.waitText("after the update")
	for _, tn := range []*tnode{alice, bob, carol} {
		if txt := tn.texts(); len(txt) != 0 {
			t.Errorf("%s: duplicates shown: %q", tn.name, txt)
		}
		if p := tn.problems(); len(p) != 0 {
			t.Errorf("%s: problems %+v", tn.name, p)
		}
	}
}

// TestFutureEpochKeptForLater: a message of the next epoch that overtakes
// the Commit is kept and read once the Commit arrives; one for a group not
// joined yet is read once the Welcome arrives.
func TestFutureEpochKeptForLater(t *testing.T) {
	n := newNet(t)
	alice, bob, carol := n.add("alice"), n.add("bob"), n.add("carol")
	id := group(t, "later", alice, bob)

	n.hold()
	if err := alice.m.Invite(id, carol.kp()); err != nil {
		t.Fatal(err)
	}
	alice.send(id, "to all three")
	// Two items per recipient: commit, then text to bob; Welcome, then
	// text to carol. Deliver each recipient's in reverse.
	got := n.held(4)
	for i := len(got) - 1; i >= 0; i-- {
		if err := got[i].to.handle("direct", got[i].item.Data); err != nil {
			t.Fatal(err)
		}
	}
	bob.waitText("to all three")
	carol.waitText("to all three")
	if c, _ := bob.m.Get(id); c.Epoch != 2 || len(c.Members) != 3 {
		t.Fatalf("bob at epoch %d with %d members", c.Epoch, len(c.Members))
	}
}

// TestCommitDiscipline: only the committer commits; others propose, and
// their texts wait for the Commit; the committer leaving hands over.
func TestCommitDiscipline(t *testing.T) {
	n := newNet(t)
	alice, bob, carol, dave := n.add("alice"), n.add("bob"), n.add("carol"), n.add("dave")
	id := group(t, "rules", alice, bob, carol)

	// bob (not the committer) invites dave: a proposal alice commits.
	if err := bob.m.Invite(id, dave.kp()); err != nil {
		t.Fatal(err)
	}
	dave.waitConv(id, "dave joins", members(4))
	dave.send(id, "dave here")
	for _, tn := range []*tnode{alice, bob, carol} {
		tn.waitText("dave here")
	}

	// carol removes bob; alice commits it; bob learns he was removed.
	if err := carol.m.Remove(id, bob.id); err != nil {
		t.Fatal(err)
	}
	bob.waitConv(id, "bob removed", func(c Conversation) bool { return c.Status == StatusRemoved })
	alice.waitConv(id, "bob gone", members(3))
	alice.send(id, "without bob")
	carol.waitText("without bob")
	dave.waitText("without bob")

	// alice, the committer, leaves: carol (now the lowest) commits it.
	if err := alice.m.Leave(id); err != nil {
		t.Fatal(err)
	}
	alice.waitConv(id, "alice left", func(c Conversation) bool { return c.Status == StatusLeft })
	carol.waitConv(id, "alice gone", members(2))
	dave.send(id, "just us")
	carol.waitText("just us")
	for _, tn := range []*tnode{alice, bob, carol, dave} {
		if p := tn.problems(); len(p) != 0 {
			t.Errorf("%s: problems %+v", tn.name, p)
		}
	}
	if _, err := alice.m.Send(id, "ghost"); !errors.Is(err, ErrNotActive) {
		t.Fatalf("send after leaving: %v", err)
	}
}

// TestRemovedCannotRead: after a removal, the removed member's group
// cannot decrypt what is sent next.
func TestRemovedCannotRead(t *testing.T) {
	n := newNet(t)
	alice, bob, carol := n.add("alice"), n.add("bob"), n.add("carol")
	id := group(t, "secret", alice, bob, carol)
	if err := alice.m.Remove(id, carol.id); err != nil {
		t.Fatal(err)
	}
	carol.waitConv(id, "carol removed", func(c Conversation) bool { return c.Status == StatusRemoved })
	bob.waitConv(id, "carol gone", members(2))

	n.hold()
	alice.send(id, "carol must not read this")
	ds := n.held(1)
	d := ds[0]
	if len(ds) != 1 || d.to != bob {
		t.Fatalf("message queued for %v, want only bob", d.to)
	}
	// Hand carol bob's copy anyway.
	if err := carol.handle("direct", d.item.Data); err != nil {
		t.Fatal(err)
	}
	msg, _ := mls.DecodeMLSMessage(d.item.Data)
	carol.m.mu.Lock()
	_, err := carol.m.convs[string(id)].g.Process(msg)
	carol.m.mu.Unlock()
	if err == nil {
		t.Fatal("carol decrypted a message sent after her removal")
	}
	if txt := carol.texts(); len(txt) != 0 {
		t.Fatalf("carol was shown %q", txt)
	}
}

// TestRestartContinues: state, history and queued messages survive a
// restart; the restarted node sends and receives in the same group.
func TestRestartContinues(t *testing.T) {
	n := newNet(t)
	alice, bob := n.add("alice"), n.add("bob")
	id := group(t, "durable", alice, bob)
	alice.send(id, "before")
	bob.waitText("before")

	alice.close()
	bob.send(id, "while alice is down") // retried until she is back
	alice.restart()
	alice.waitText("while alice is down")
	alice.send(id, "after")
	bob.waitText("after")
	if c, ok := alice.m.Get(id); !ok || c.Status != StatusActive || len(c.Members) != 2 {
		t.Fatalf("alice's group after restart: %+v", c)
	}
	if h, _ := alice.hist.Last(id, 10); len(h) != 3 {
		t.Fatalf("alice's history has %d messages, want 3", len(h))
	}
}

// TestConflictingCommitReported: a Commit from a member who is not the
// committer, racing the committer's, is refused by those who applied the
// committer's first, and reported.
func TestConflictingCommitReported(t *testing.T) {
	n := newNet(t)
	alice, bob, carol := n.add("alice"), n.add("bob"), n.add("carol")
	id := group(t, "race", alice, bob, carol)

	n.hold()
	if err := alice.m.UpdateKey(id); err != nil { // the committer's
		t.Fatal(err)
	}
	bob.m.mu.Lock() // a rogue commit by bob for the same epoch
	err := bob.m.commitLocked(bob.m.convs[string(id)], nil, true)
	bob.m.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	ds := n.held(4)
	for _, d := range ds { // alice's first
		if d.from == alice && d.to == carol {
			carol.handle("direct", d.item.Data)
		}
	}
	for _, d := range ds {
		if d.from == bob && d.to == carol {
			carol.handle("direct", d.item.Data)
		}
	}
	carol.waitEvent("conflict problem", func(ev Event) bool {
		p, ok := ev.(Problem)
		return ok && bytes.Equal(p.Conversation, id)
	})
}

func TestInfoRoundTrip(t *testing.T) {
	for _, i := range []Info{{Kind: KindDirect}, {Kind: KindGroup, Name: "x"}, {Kind: KindGroup, Name: string(bytes.Repeat([]byte("n"), MaxNameSize))}} {
		b, err := i.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseInfo(b)
		if err != nil || got != i {
			t.Fatalf("%+v → %x → %+v, %v", i, b, got, err)
		}
	}
	for _, bad := range [][]byte{nil, {1, 1}, {2, 1, 0}, {1, 1, 1, 'x'}, {1, 2, 0}, {1, 3, 0}, {1, 2, 2, 'x'}, {1, 2, 1, 0xff},
		{1, 2, 4, 'a', 0x1b, '[', 'H'}, append([]byte{1, 2, 4}, "a\u202e"...)} { // a group named with a control character
		if _, err := ParseInfo(bad); err == nil {
			t.Errorf("ParseInfo(%x) accepted", bad)
		}
	}
}

func FuzzParseInfo(f *testing.F) {
	f.Add([]byte{1, 1, 0})
	f.Add([]byte{1, 2, 3, 'a', 'b', 'c'})
	f.Fuzz(func(t *testing.T, b []byte) {
		i, err := ParseInfo(b)
		if err != nil {
			return
		}
		out, err := i.Marshal()
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("%x does not round-trip: %x, %v", b, out, err)
		}
	})
}

func FuzzDecodeRecord(f *testing.F) {
	r := record{kind: KindDirect, status: StatusActive, peer: bytes.Repeat([]byte{7}, 32), state: []byte("state")}
	r.commits = append(r.commits, [32]byte{1})
	f.Add(r.encode())
	g := record{kind: KindGroup, status: StatusWaiting, name: "g"}
	f.Add(g.encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		if err != nil {
			return
		}
		if out := r.encode(); !bytes.Equal(out, b) && r.kind == KindDirect {
			t.Fatalf("%x does not round-trip: %x", b, out)
		}
	})
}

func FuzzDecodeDeferred(f *testing.F) {
	f.Add(encodeDeferred(time.UnixMilli(1), "direct", []byte{0, 1, 2}))
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeDeferred([]byte("k"), b)
	})
}

// FuzzHandle feeds Handle arbitrary bytes as if they had arrived from the
// network, seeded with real messages of every kind (Welcome, Commit,
// proposal, application message): it must never panic, and the node must
// still work after.
func FuzzHandle(f *testing.F) {
	n := newNet(f)
	alice, bob, carol := n.add("alice"), n.add("bob"), n.add("carol")
	id := group(f, "fuzz", alice, bob)
	n.hold()
	if err := bob.m.Invite(id, carol.kp()); err != nil { // a proposal
		f.Fatal(err)
	}
	if err := alice.m.Invite(id, carol.kp()); err != nil { // a commit and a Welcome
		f.Fatal(err)
	}
	if _, err := alice.m.Send(id, "seed"); err != nil { // held until the commit… or sent
		f.Fatal(err)
	}
	for _, d := range n.held(3) {
		f.Add(d.item.Data)
	}
	f.Add([]byte{})
	victim := n.add("victim")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := victim.m.Handle("direct", data); err != nil {
			t.Fatalf("Handle: %v", err)
		}
		for _, tn := range []*tnode{bob, carol} {
			if err := tn.m.Handle("server", data); err != nil {
				t.Fatalf("Handle: %v", err)
			}
		}
	})
}

// TestDMAgainAfterLeaving: a DM one side left is over; opening it again
// makes a new group both are in.
func TestDMAgainAfterLeaving(t *testing.T) {
	n := newNet(t)
	alice, bob := n.add("alice"), n.add("bob")
	dm, err := alice.m.CreateDM(bob.id, bob.kp())
	if err != nil {
		t.Fatal(err)
	}
	bob.waitConv(dm.ID, "DM", members(2))
	if err := alice.m.Leave(dm.ID); err != nil { // alice commits at leaf 0: bob commits her removal
		t.Fatal(err)
	}
	alice.waitConv(dm.ID, "left", func(c Conversation) bool { return c.Status == StatusLeft })
	bob.waitConv(dm.ID, "alone", members(1))
	if _, err := bob.m.ExpectDM(alice.id); err != nil {
		t.Fatal(err)
	}
	again, err := alice.m.CreateDM(bob.id, bob.kp())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.ID, dm.ID) || len(again.Members) != 2 {
		t.Fatalf("DM again: %+v", again)
	}
	bob.waitConv(dm.ID, "DM again", members(2))
	alice.send(dm.ID, "hello again")
	bob.waitText("hello again")
}
