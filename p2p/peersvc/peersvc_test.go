package peersvc

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/rpc"
	"github.com/quicproquo/qpq/internal/chanid"
	"github.com/quicproquo/qpq/internal/smallfs"
	"github.com/quicproquo/qpq/rpc/errcode"
	"github.com/quicproquo/qpq/schema"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"
)

// node is one side of a test: an identity, its bbolt file and service.
type node struct {
	key   ed25519.PublicKey
	path  string
	db    *bolt.DB
	store *Store
	svc   *Service
}

func newNode(t *testing.T, username string, lim Limits) *node {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{key: pub, path: filepath.Join(t.TempDir(), "node.db")}
	n.open(t, username, lim)
	return n
}

func (n *node) open(t *testing.T, username string, lim Limits) {
	t.Helper()
	db, err := bolt.Open(n.path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	n.db = db
	if n.store, err = NewStore(db); err != nil {
		t.Fatal(err)
	}
	if n.svc, err = New(n.store, Config{Identity: n.key, Username: username, Limits: lim}); err != nil {
		t.Fatal(err)
	}
}

// dial connects caller to srv's service over an in-memory RPC connection,
// with caller as the authenticated remote, the way the P2P link does.
func dial(t *testing.T, caller ed25519.PublicKey, boot capnp.Client) schema.NodeService {
	t.Helper()
	c1, c2 := net.Pipe()
	srvConn := rpc.NewConn(rpc.NewStreamTransport(c1), &rpc.Options{BootstrapClient: boot})
	cliConn := rpc.NewConn(rpc.NewStreamTransport(c2), nil)
	ns := schema.NodeService(cliConn.Bootstrap(context.Background()))
	t.Cleanup(func() {
		ns.Release()
		cliConn.Close()
		<-srvConn.Done()
	})
	return ns
}

func leakCheck(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

func wantCode(t *testing.T, err error, code errcode.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", code)
	}
	if got := errcode.Of(err); got != code {
		t.Fatalf("got %q (%v), want code %s", got, err, code)
	}
}

func randKey(t *testing.T) ed25519.PublicKey {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func fetchKP(ns schema.NodeService, key []byte) ([]byte, error) {
	f, rel := ns.FetchKeyPackage(context.Background(), func(p schema.NodeService_fetchKeyPackage_Params) error {
		return p.SetIdentityKey(key)
	})
	defer rel()
	res, err := f.Struct()
	if err != nil {
		return nil, err
	}
	kp, err := res.Package()
	return bytes.Clone(kp), err
}

func enqueue(ns schema.NodeService, rcpt, ch, payload []byte, version uint16) (uint64, error) {
	f, rel := ns.Enqueue(context.Background(), func(p schema.NodeService_enqueue_Params) error {
		p.SetVersion(version)
		if err := p.SetChannelId(ch); err != nil {
			return err
		}
		if err := p.SetPayload(payload); err != nil {
			return err
		}
		return p.SetRecipientKey(rcpt)
	})
	defer rel()
	res, err := f.Struct()
	if err != nil {
		return 0, err
	}
	return res.Seq(), nil
}

func TestFetchKeyPackagePopsOwnOnly(t *testing.T) {
	leakCheck(t)
	b := newNode(t, "bob", Limits{})
	caller := randKey(t)
	ns := dial(t, caller, b.svc.Client(caller))
	if err := b.store.AddKeyPackages([]byte("kp-1"), []byte("kp-2")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kp-1", "kp-2", ""} {
		kp, err := fetchKP(ns, b.key)
		if err != nil || string(kp) != want {
			t.Fatalf("fetchKeyPackage = %q, %v; want %q", kp, err, want)
		}
	}
	if n, err := b.store.KeyPackageCount(); err != nil || n != 0 {
		t.Fatalf("KeyPackageCount = %d, %v after popping all", n, err)
	}
	_, err := fetchKP(ns, randKey(t))
	wantCode(t, err, errcode.NotFound)
	_, err = fetchKP(ns, []byte("short"))
	wantCode(t, err, errcode.InvalidArgument)
	if err := b.store.AddKeyPackages(nil); err == nil {
		t.Error("stored an empty key package")
	}

	// With a last-resort package, an empty stock answers it, every time.
	if err := b.store.SetLastResortKeyPackage([]byte("kp-last")); err != nil {
		t.Fatal(err)
	}
	if err := b.store.AddKeyPackages([]byte("kp-3")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kp-3", "kp-last", "kp-last"} {
		kp, err := fetchKP(ns, b.key)
		if err != nil || string(kp) != want {
			t.Fatalf("fetchKeyPackage = %q, %v; want %q", kp, err, want)
		}
	}
	if kp, _ := b.store.LastResortKeyPackage(); string(kp) != "kp-last" {
		t.Fatalf("last resort %q", kp)
	}
	if err := b.store.SetLastResortKeyPackage(nil); err == nil {
		t.Error("stored an empty last-resort key package")
	}
}

// Deliveries are on disk when enqueue answers, carry the authenticated
// sender, and keep strictly increasing seqs across Ack and reopening.
func TestEnqueueDurableInOrderWithSender(t *testing.T) {
	leakCheck(t)
	b := newNode(t, "bob", Limits{})
	alice := randKey(t)
	ch := chanid.Derive(alice, b.key)
	ns := dial(t, alice, b.svc.Client(alice))

	changed := b.store.InboxChanged()
	s1, err := enqueue(ns, b.key, ch[:], []byte("one"), 1)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("InboxChanged not signalled by an enqueue")
	}
	s2, err := enqueue(ns, b.key, nil, []byte("two"), 1)
	if err != nil || s2 <= s1 {
		t.Fatalf("second seq %d (%v) after %d", s2, err, s1)
	}

	// Reopen the file: what was acknowledged must be there.
	b.db.Close()
	b.open(t, "bob", Limits{})
	ds, err := b.store.Peek(0)
	if err != nil || len(ds) != 2 {
		t.Fatalf("Peek after reopen = %d deliveries, %v", len(ds), err)
	}
	if ds[0].Seq != s1 || string(ds[0].Payload) != "one" || !bytes.Equal(ds[0].ChannelID, ch[:]) ||
		!bytes.Equal(ds[0].Sender, alice) || ds[0].Received.IsZero() {
		t.Errorf("first delivery %+v", ds[0])
	}
	if ds[1].Seq != s2 || string(ds[1].Payload) != "two" || len(ds[1].ChannelID) != 0 {
		t.Errorf("second delivery %+v", ds[1])
	}
	if err := b.store.Ack(s1); err != nil {
		t.Fatal(err)
	}
	if ds, _ := b.store.Peek(0); len(ds) != 1 || ds[0].Seq != s2 {
		t.Fatalf("after Ack(%d): %+v", s1, ds)
	}
	ns = dial(t, alice, b.svc.Client(alice))
	s3, err := enqueue(ns, b.key, nil, []byte("three"), 1)
	if err != nil || s3 <= s2 {
		t.Fatalf("seq after ack and reopen = %d (%v), want > %d", s3, err, s2)
	}
	if ds, _ := b.store.Peek(1); len(ds) != 1 || ds[0].Seq != s2 {
		t.Fatalf("Peek(1) = %+v", ds)
	}
}

func TestEnqueueRejects(t *testing.T) {
	leakCheck(t)
	b := newNode(t, "bob", Limits{MaxPayload: 16, MaxInboxMessages: 2})
	alice := randKey(t)
	ns := dial(t, alice, b.svc.Client(alice))
	for _, tc := range []struct {
		name    string
		rcpt    []byte
		ch      []byte
		payload []byte
		version uint16
		code    errcode.Code
	}{
		{"another recipient", randKey(t), nil, []byte("x"), 1, errcode.PermissionDenied},
		{"short recipient", b.key[:5], nil, []byte("x"), 1, errcode.InvalidArgument},
		{"version 2", b.key, nil, []byte("x"), 2, errcode.InvalidArgument},
		{"empty payload", b.key, nil, nil, 1, errcode.InvalidArgument},
		{"payload over the limit", b.key, nil, make([]byte, 17), 1, errcode.ResourceExhausted},
		{"5-byte channel id", b.key, []byte("chan5"), []byte("x"), 1, errcode.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := enqueue(ns, tc.rcpt, tc.ch, tc.payload, tc.version)
			wantCode(t, err, tc.code)
		})
	}
	for range 2 {
		if _, err := enqueue(ns, b.key, nil, []byte("fill"), 1); err != nil {
			t.Fatal(err)
		}
	}
	_, err := enqueue(ns, b.key, nil, []byte("overflow"), 1)
	wantCode(t, err, errcode.ResourceExhausted)
	if ds, _ := b.store.Peek(0); len(ds) != 2 {
		t.Fatalf("inbox holds %d deliveries, want the 2 accepted", len(ds))
	}
	if err := b.store.Ack(^uint64(0)); err != nil {
		t.Fatal(err)
	}
	if _, err := enqueue(ns, b.key, nil, []byte("room again"), 1); err != nil {
		t.Fatalf("enqueue after Ack freed the inbox: %v", err)
	}
}

func TestBatchEnqueue(t *testing.T) {
	leakCheck(t)
	b := newNode(t, "bob", Limits{MaxBatch: 3})
	alice := randKey(t)
	ns := dial(t, alice, b.svc.Client(alice))
	batch := func(rcpts ...[]byte) ([]uint64, error) {
		f, rel := ns.BatchEnqueue(context.Background(), func(p schema.NodeService_batchEnqueue_Params) error {
			p.SetVersion(1)
			l, err := p.NewRecipientKeys(int32(len(rcpts)))
			if err != nil {
				return err
			}
			for i, r := range rcpts {
				l.Set(i, r)
			}
			return p.SetPayload([]byte("group message"))
		})
		defer rel()
		res, err := f.Struct()
		if err != nil {
			return nil, err
		}
		l, err := res.Seqs()
		var seqs []uint64
		for i := range l.Len() {
			seqs = append(seqs, l.At(i))
		}
		return seqs, err
	}
	seqs, err := batch(b.key, b.key)
	if err != nil || len(seqs) != 2 || seqs[1] <= seqs[0] {
		t.Fatalf("batchEnqueue = %v, %v", seqs, err)
	}
	_, err = batch(b.key, randKey(t))
	wantCode(t, err, errcode.PermissionDenied)
	_, err = batch()
	wantCode(t, err, errcode.InvalidArgument)
	_, err = batch(b.key, b.key, b.key, b.key)
	wantCode(t, err, errcode.ResourceExhausted)
	if ds, _ := b.store.Peek(0); len(ds) != 2 {
		t.Fatalf("rejected batches stored something: %d deliveries", len(ds))
	}
}

func TestHybridKeysAndNames(t *testing.T) {
	leakCheck(t)
	b := newNode(t, "bob", Limits{})
	alice := randKey(t)
	ns := dial(t, alice, b.svc.Client(alice))
	fetchHK := func(key []byte) ([]byte, error) {
		f, rel := ns.FetchHybridKey(context.Background(), func(p schema.NodeService_fetchHybridKey_Params) error {
			return p.SetIdentityKey(key)
		})
		defer rel()
		res, err := f.Struct()
		if err != nil {
			return nil, err
		}
		k, err := res.HybridPublicKey()
		return bytes.Clone(k), err
	}
	_, err := fetchHK(b.key)
	wantCode(t, err, errcode.NotFound)
	hk := bytes.Repeat([]byte{7}, HybridKeySize)
	if err := b.store.SetHybridKey(hk[:10]); err == nil {
		t.Error("stored a 10-byte hybrid key")
	}
	if err := b.store.SetHybridKey(hk); err != nil {
		t.Fatal(err)
	}
	if got, err := fetchHK(b.key); err != nil || !bytes.Equal(got, hk) {
		t.Fatalf("fetchHybridKey = %d bytes, %v", len(got), err)
	}
	_, err = fetchHK(alice)
	wantCode(t, err, errcode.NotFound)

	f, rel := ns.FetchHybridKeys(context.Background(), func(p schema.NodeService_fetchHybridKeys_Params) error {
		l, err := p.NewIdentityKeys(2)
		if err != nil {
			return err
		}
		l.Set(0, alice)
		return l.Set(1, b.key)
	})
	res, err := f.Struct()
	if err != nil {
		t.Fatal(err)
	}
	keys, err := res.Keys()
	if err != nil || keys.Len() != 2 {
		t.Fatalf("fetchHybridKeys: %v, %d keys", err, keys.Len())
	}
	k0, _ := keys.At(0)
	k1, _ := keys.At(1)
	if len(k0) != 0 || !bytes.Equal(k1, hk) {
		t.Errorf("fetchHybridKeys = [%d bytes, %d bytes], want [0, %d]", len(k0), len(k1), HybridKeySize)
	}
	rel()

	ru, rel := ns.ResolveUser(context.Background(), func(p schema.NodeService_resolveUser_Params) error {
		return p.SetUsername("bob")
	})
	r1, err := ru.Struct()
	if err != nil {
		t.Fatal(err)
	}
	if k, _ := r1.IdentityKey(); !bytes.Equal(k, b.key) {
		t.Errorf("resolveUser(bob) = %x", k)
	}
	rel()
	ru, rel = ns.ResolveUser(context.Background(), func(p schema.NodeService_resolveUser_Params) error {
		return p.SetUsername("carol")
	})
	r1, err = ru.Struct()
	if err != nil {
		t.Fatal(err)
	}
	if k, _ := r1.IdentityKey(); len(k) != 0 {
		t.Errorf("resolveUser(carol) = %x, want empty", k)
	}
	rel()
	for key, want := range map[string]string{string(b.key): "bob", string(alice): ""} {
		ri, rel := ns.ResolveIdentity(context.Background(), func(p schema.NodeService_resolveIdentity_Params) error {
			return p.SetIdentityKey([]byte(key))
		})
		r, err := ri.Struct()
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := r.Username(); got != want {
			t.Errorf("resolveIdentity = %q, want %q", got, want)
		}
		rel()
	}
}

// Every method a node does not answer for itself fails with
// failed-precondition and says so.
func TestNotOfferedOverP2P(t *testing.T) {
	leakCheck(t)
	b := newNode(t, "bob", Limits{})
	alice := randKey(t)
	ns := dial(t, alice, b.svc.Client(alice))
	ctx := context.Background()
	calls := map[string]func() error{
		"uploadKeyPackage":     func() error { f, r := ns.UploadKeyPackage(ctx, nil); defer r(); _, err := f.Struct(); return err },
		"fetch":                func() error { f, r := ns.Fetch(ctx, nil); defer r(); _, err := f.Struct(); return err },
		"fetchWait":            func() error { f, r := ns.FetchWait(ctx, nil); defer r(); _, err := f.Struct(); return err },
		"uploadHybridKey":      func() error { f, r := ns.UploadHybridKey(ctx, nil); defer r(); _, err := f.Struct(); return err },
		"opaqueRegisterStart":  func() error { f, r := ns.OpaqueRegisterStart(ctx, nil); defer r(); _, err := f.Struct(); return err },
		"opaqueRegisterFinish": func() error { f, r := ns.OpaqueRegisterFinish(ctx, nil); defer r(); _, err := f.Struct(); return err },
		"opaqueLoginStart":     func() error { f, r := ns.OpaqueLoginStart(ctx, nil); defer r(); _, err := f.Struct(); return err },
		"opaqueLoginFinish":    func() error { f, r := ns.OpaqueLoginFinish(ctx, nil); defer r(); _, err := f.Struct(); return err },
		"publishEndpoint":      func() error { f, r := ns.PublishEndpoint(ctx, nil); defer r(); _, err := f.Struct(); return err },
		"resolveEndpoint":      func() error { f, r := ns.ResolveEndpoint(ctx, nil); defer r(); _, err := f.Struct(); return err },
		"peek":                 func() error { f, r := ns.Peek(ctx, nil); defer r(); _, err := f.Struct(); return err },
		"ack":                  func() error { f, r := ns.Ack(ctx, nil); defer r(); _, err := f.Struct(); return err },
		"serverInfo":           func() error { f, r := ns.ServerInfo(ctx, nil); defer r(); _, err := f.Struct(); return err },
	}
	for name, call := range calls {
		err := call()
		if errcode.Of(err) != errcode.FailedPrecondition || !bytes.Contains([]byte(errcode.Message(err)), []byte(name)) {
			t.Errorf("%s: %v, want failed-precondition naming the method", name, err)
		}
	}
	hf, rel := ns.Health(ctx, nil)
	res, err := hf.Struct()
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := res.Status(); s != "ok" {
		t.Errorf("health = %q", s)
	}
	rel()
}

func createChannel(ns schema.NodeService, peerKey []byte) ([]byte, bool, error) {
	f, rel := ns.CreateChannel(context.Background(), func(p schema.NodeService_createChannel_Params) error {
		return p.SetPeerKey(peerKey)
	})
	defer rel()
	res, err := f.Struct()
	if err != nil {
		return nil, false, err
	}
	id, err := res.ChannelId()
	return bytes.Clone(id), res.WasNew(), err
}

// One side opens, later the other: the opener initiates, the other side
// learns its role from its own record without calling.
func TestOpenChannelSequential(t *testing.T) {
	leakCheck(t)
	a, b := newNode(t, "alice", Limits{}), newNode(t, "bob", Limits{})
	toB := dial(t, a.key, b.svc.Client(a.key))
	ch, wasNew, err := a.svc.OpenChannel(context.Background(), b.key, toB)
	if err != nil || !wasNew || ch.ID != chanid.Derive(a.key, b.key) {
		t.Fatalf("first open: %+v, wasNew=%v, %v", ch, wasNew, err)
	}
	// A client that fails every call proves no call is made.
	broken := schema.NodeService(capnp.ErrorClient(errcode.New(errcode.Internal, "must not be called")))
	chB, wasNewB, err := b.svc.OpenChannel(context.Background(), a.key, broken)
	if err != nil || wasNewB || chB.ID != ch.ID {
		t.Fatalf("second side: %+v, wasNew=%v, %v", chB, wasNewB, err)
	}
	// Repeated calls repeat the role.
	if _, again, err := a.svc.OpenChannel(context.Background(), b.key, broken); err != nil || !again {
		t.Fatalf("reopen: wasNew=%v, %v", again, err)
	}
	id, callerInitiates, err := createChannel(toB, b.key)
	if err != nil || !callerInitiates || !bytes.Equal(id, ch.ID[:]) {
		t.Fatalf("repeated createChannel: %x %v %v", id, callerInitiates, err)
	}
	_, _, err = createChannel(toB, a.key)
	wantCode(t, err, errcode.PermissionDenied)
}

// rendezvous holds each arriving call until the other side's call has
// arrived too. Both arrive only while both nodes have their own
// createChannel in flight, so answering after it is a simultaneous open.
type rendezvous struct {
	mu     sync.Mutex // guards the fields below
	n      int
	ch     chan struct{}
	missed int // rounds where the partner never came
}

func (r *rendezvous) arrive() {
	r.mu.Lock()
	if r.n == 0 {
		r.ch = make(chan struct{})
	}
	r.n++
	ch := r.ch
	if r.n == 2 {
		r.n = 0
		close(ch)
	}
	r.mu.Unlock()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		r.mu.Lock()
		r.missed++
		r.n = 0
		r.mu.Unlock()
	}
}

// holdServer answers createChannel only at the rendezvous.
type holdServer struct {
	*server
	r *rendezvous
}

func (h holdServer) CreateChannel(ctx context.Context, call schema.NodeService_createChannel) error {
	h.r.arrive()
	return h.server.CreateChannel(ctx, call)
}

func holdClient(svc *Service, caller ed25519.PublicKey, r *rendezvous) capnp.Client {
	return capnp.Client(schema.NodeService_ServerToClient(holdServer{&server{svc: svc, caller: caller}, r}))
}

// Both nodes open at the same moment, every time: they agree on one id and
// the lower identity key initiates.
func TestOpenChannelSimultaneous(t *testing.T) {
	leakCheck(t)
	a, b := newNode(t, "alice", Limits{}), newNode(t, "bob", Limits{})
	r := &rendezvous{}
	toB := dial(t, a.key, holdClient(b.svc, a.key, r))
	toA := dial(t, b.key, holdClient(a.svc, b.key, r))
	lowerIsA := bytes.Compare(a.key, b.key) < 0
	for i := range 20 {
		ra, rb := openBoth(t, a, b, toB, toA)
		if ra.err != nil || rb.err != nil {
			t.Fatalf("round %d: %v / %v", i, ra.err, rb.err)
		}
		if ra.ch.ID != rb.ch.ID || ra.wasNew == rb.wasNew || ra.wasNew != lowerIsA {
			t.Fatalf("round %d: a=(%x,%v) b=(%x,%v), lower is a: %v", i, ra.ch.ID, ra.wasNew, rb.ch.ID, rb.wasNew, lowerIsA)
		}
		forget(t, a, b)
	}
	if r.missed != 0 {
		t.Fatalf("%d calls were not simultaneous", r.missed)
	}
}

// Without forcing, both sides open with random timing, many times: the
// pair always agrees, whichever interleaving happened.
func TestOpenChannelRandomInterleavings(t *testing.T) {
	leakCheck(t)
	a, b := newNode(t, "alice", Limits{}), newNode(t, "bob", Limits{})
	toB := dial(t, a.key, b.svc.Client(a.key))
	toA := dial(t, b.key, a.svc.Client(b.key))
	for i := range 100 {
		ra, rb := openBoth(t, a, b, toB, toA)
		if ra.err != nil || rb.err != nil {
			t.Fatalf("round %d: %v / %v", i, ra.err, rb.err)
		}
		if ra.ch.ID != rb.ch.ID || ra.wasNew == rb.wasNew {
			t.Fatalf("round %d: a=(%x,%v) b=(%x,%v)", i, ra.ch.ID, ra.wasNew, rb.ch.ID, rb.wasNew)
		}
		forget(t, a, b)
	}
}

type openResult struct {
	ch     Channel
	wasNew bool
	err    error
}

func openBoth(t *testing.T, a, b *node, toB, toA schema.NodeService) (ra, rb openResult) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		ra.ch, ra.wasNew, ra.err = a.svc.OpenChannel(ctx, b.key, toB)
	}()
	go func() {
		defer wg.Done()
		rb.ch, rb.wasNew, rb.err = b.svc.OpenChannel(ctx, a.key, toA)
	}()
	wg.Wait()
	return ra, rb
}

func forget(t *testing.T, a, b *node) {
	if err := a.store.ForgetChannel(b.key); err != nil {
		t.Fatal(err)
	}
	if err := b.store.ForgetChannel(a.key); err != nil {
		t.Fatal(err)
	}
}

// A channel created elsewhere (a home server) and recorded first keeps its
// roles on the P2P link.
func TestRecordChannelFirstDecisionStands(t *testing.T) {
	leakCheck(t)
	a, b := newNode(t, "alice", Limits{}), newNode(t, "bob", Limits{})
	if _, err := b.store.RecordChannel(b.key, a.key, true); err != nil {
		t.Fatal(err)
	}
	ch, err := b.store.RecordChannel(b.key, a.key, false)
	if err != nil || !ch.SelfInitiates {
		t.Fatalf("second RecordChannel changed the roles: %+v %v", ch, err)
	}
	toB := dial(t, a.key, b.svc.Client(a.key))
	_, wasNew, err := a.svc.OpenChannel(context.Background(), b.key, toB)
	if err != nil || wasNew {
		t.Fatalf("a's open over P2P: wasNew=%v, %v; b initiates already", wasNew, err)
	}
}

// TestEnqueueOnAFullDisk: a node whose disk is full refuses a peer's
// delivery with resource-exhausted (the sender tries later or leaves it
// at the home server), not as its own bug, and takes deliveries again
// once there is space.
func TestEnqueueOnAFullDisk(t *testing.T) {
	fs := smallfs.Dir(t, 4<<20)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	n := &node{key: pub, path: filepath.Join(fs, "node.db")}
	n.open(t, "bob", Limits{})
	caller, _, _ := ed25519.GenerateKey(rand.Reader)
	ns := dial(t, caller, n.svc.Client(caller))
	if _, err := enqueue(ns, n.key, nil, []byte("before"), 1); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(fs, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = f.Write(make([]byte, 64<<10))
	}
	f.Close()
	_, err = enqueue(ns, n.key, nil, bytes.Repeat([]byte("x"), 256<<10), 1)
	wantCode(t, err, errcode.ResourceExhausted)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if _, err := enqueue(ns, n.key, nil, []byte("after"), 1); err != nil {
		t.Fatalf("with space again: %v", err)
	}
	got, err := n.store.Peek(10)
	if err != nil || len(got) != 2 {
		t.Fatalf("inbox holds %d deliveries (%v), want 2", len(got), err)
	}
}
