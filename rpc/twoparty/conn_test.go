package twoparty

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exc"
	capnprpc "capnproto.org/go/capnp/v3/rpc"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
	"go.uber.org/goleak"

	"github.com/quicproquo/qpq/rpc/errcode"
	"github.com/quicproquo/qpq/schema"
)

// service implements the few NodeService methods the tests call; the
// others are never called (the embedded nil interface would panic).
type service struct {
	schema.NodeService_Server
	waiting  chan struct{} // fetchWait has started waiting
	canceled chan error    // fetchWait's context ended, with this error
}

func newService() *service {
	return &service{waiting: make(chan struct{}, 16), canceled: make(chan error, 16)}
}

func (s *service) Health(_ context.Context, call schema.NodeService_health) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetStatus("ok")
}

// Enqueue answers the payload's length as the seq, or invalid-argument
// for an empty payload.
func (s *service) Enqueue(_ context.Context, call schema.NodeService_enqueue) error {
	p, err := call.Args().Payload()
	if err != nil {
		return err
	}
	if len(p) == 0 {
		return errcode.New(errcode.InvalidArgument, "empty payload")
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	res.SetSeq(uint64(len(p)))
	return nil
}

// FetchWait blocks until its context ends.
func (s *service) FetchWait(ctx context.Context, call schema.NodeService_fetchWait) error {
	call.Go()
	notify(s.waiting, struct{}{})
	<-ctx.Done()
	notify(s.canceled, ctx.Err())
	return ctx.Err()
}

// notify sends v unless ch is full: a fuzzed peer may call without
// limit, and only the tests that read ch need its values.
func notify[T any](ch chan T, v T) {
	select {
	case ch <- v:
	default:
	}
}

// tcpPair returns the two ends of a loopback TCP connection: a stream
// with kernel buffers, as QUIC streams have.
func tcpPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	return a, b
}

// pair connects a client Conn to a Conn serving svc.
func pair(t *testing.T, svc *service) (client, server *Conn) {
	t.Helper()
	a, b := tcpPair(t)
	server = NewConn(b, Options{Bootstrap: capnp.Client(schema.NodeService_ServerToClient(svc))})
	client = NewConn(a, Options{})
	t.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}

func health(ctx context.Context, ns schema.NodeService) (string, error) {
	f, release := ns.Health(ctx, nil)
	defer release()
	res, err := f.Struct()
	if err != nil {
		return "", err
	}
	return res.Status()
}

func enqueue(ctx context.Context, ns schema.NodeService, payload []byte) (uint64, error) {
	f, release := ns.Enqueue(ctx, func(p schema.NodeService_enqueue_Params) error {
		return p.SetPayload(payload)
	})
	defer release()
	res, err := f.Struct()
	if err != nil {
		return 0, err
	}
	return res.Seq(), nil
}

// exercise makes the calls every pairing of implementations must get
// right: results, a coded error, and many concurrent calls.
func exercise(t *testing.T, ns schema.NodeService) {
	t.Helper()
	ctx := context.Background()
	if s, err := health(ctx, ns); err != nil || s != "ok" {
		t.Fatalf("health = %q, %v; want ok", s, err)
	}
	if seq, err := enqueue(ctx, ns, make([]byte, 1024)); err != nil || seq != 1024 {
		t.Fatalf("enqueue = %d, %v; want 1024", seq, err)
	}
	_, err := enqueue(ctx, ns, nil)
	if errcode.Of(err) != errcode.InvalidArgument || errcode.Message(err) != "empty payload" {
		t.Fatalf("enqueue of nothing: err = %v; want invalid-argument: empty payload", err)
	}
	concurrentEnqueues(t, ns, 16, 50, func(g, i int) int { return 1 + g*100 + i })
}

// concurrentEnqueues makes calls enqueues on each of goroutines
// goroutines at once, the i-th of goroutine g with a payload of size(g, i)
// bytes, and checks each is answered with its own length.
func concurrentEnqueues(t *testing.T, ns schema.NodeService, goroutines, calls int, size func(g, i int) int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range calls {
				n := size(g, i)
				seq, err := enqueue(context.Background(), ns, make([]byte, n))
				if err == nil && seq != uint64(n) {
					err = fmt.Errorf("seq %d for a payload of %d", seq, n)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestCallsBetweenOwnEnds(t *testing.T) {
	noLeaks(t)
	client, server := pair(t, newService())
	ns := schema.NodeService(client.Bootstrap())
	defer ns.Release()
	exercise(t, ns)

	// Our server answers with noFinishNeeded and our client sends no
	// Finish: question ids are reused at once and no answer is left.
	for range 100 {
		if _, err := health(context.Background(), ns); err != nil {
			t.Fatal(err)
		}
	}
	client.mu.Lock()
	ids, open := client.nextID, len(client.questions)
	client.mu.Unlock()
	if ids > 20 || open != 1 {
		t.Errorf("after sequential calls: %d question ids used, %d open; want few ids and only the bootstrap open", ids, open)
	}
	if answers := heldAnswers(server); answers != 1 {
		t.Errorf("server holds %d answers; want 1 (the bootstrap)", answers)
	}
}

// Large calls made at once fill the write combiner past maxPending, so
// writers wait for it; every call must still get its own answer.
func TestLargeConcurrentCalls(t *testing.T) {
	noLeaks(t)
	client, _ := pair(t, newService())
	ns := schema.NodeService(client.Bootstrap())
	defer ns.Release()
	concurrentEnqueues(t, ns, 8, 4, func(g, i int) int { return 200<<10 + g*10 + i })
}

// gatedService holds every enqueue until its round's gate is closed, as
// a group commit holds the enqueues it carries.
type gatedService struct {
	*service
	gate atomic.Pointer[chan struct{}]
}

func (s *gatedService) Enqueue(ctx context.Context, call schema.NodeService_enqueue) error {
	gate := *s.gate.Load()
	call.Go()
	<-gate
	return s.service.Enqueue(ctx, call)
}

// countingConn counts the Writes on a stream.
type countingConn struct {
	net.Conn
	writes atomic.Int32
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// gatedPair is a client and a server over TCP whose enqueues wait at
// svc's gate, with the stream writes of one side counted.
type gatedPair struct {
	server  *Conn
	svc     *gatedService
	ns      schema.NodeService // the client's bootstrap capability
	counted *countingConn
}

// newGatedPair counts the client's writes if countClient, else the
// server's; it has made one call, so the bootstrap is settled.
func newGatedPair(t *testing.T, countClient bool) gatedPair {
	t.Helper()
	a, b := tcpPair(t)
	var counted *countingConn
	if countClient {
		counted = &countingConn{Conn: a}
		a = counted
	} else {
		counted = &countingConn{Conn: b}
		b = counted
	}
	svc := &gatedService{service: newService()}
	server := NewConn(b, Options{Bootstrap: capnp.Client(schema.NodeService_ServerToClient(svc))})
	client := NewConn(a, Options{})
	ns := schema.NodeService(client.Bootstrap())
	t.Cleanup(func() { ns.Release(); client.Close(); server.Close() })
	if _, err := health(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return gatedPair{server: server, svc: svc, ns: ns, counted: counted}
}

// Returns of calls that complete together (one group commit wakes them
// all) leave in few stream writes, so they share QUIC packets instead of
// taking one each. How few depends on the scheduler, so the test counts
// over several rounds.
func TestReturnsCompletingTogetherShareWrites(t *testing.T) {
	noLeaks(t)
	const calls, rounds = 16, 10
	g := newGatedPair(t, false)
	server, svc, ns, counted := g.server, g.svc, g.ns, g.counted

	var writes int32
	for range rounds {
		gate := make(chan struct{})
		svc.gate.Store(&gate)
		errs := make(chan error, calls)
		for range calls {
			go func() {
				_, err := enqueue(context.Background(), ns, []byte("x"))
				errs <- err
			}()
		}
		waitFor(t, func() bool { return server.serving.Load() == calls })
		before := counted.writes.Load()
		close(gate)
		for range calls {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		writes += counted.writes.Load() - before
	}
	t.Logf("%d Returns in %d writes", calls*rounds, writes)
	if writes > calls*rounds/2 {
		t.Errorf("%d Returns completing %d at a time took %d stream writes; want at most %d", calls*rounds, calls, writes, calls*rounds/2)
	}
}

// Calls made at once from several goroutines (as a node's outbox
// delivers in parallel) leave in few stream writes, as the Returns above
// do: each goroutine's call would otherwise find the previous write done
// and go out alone, one QUIC packet and one sendmsg each.
func TestCallsMadeTogetherShareWrites(t *testing.T) {
	noLeaks(t)
	const calls, rounds = 16, 10
	g := newGatedPair(t, true)
	server, svc, ns, counted := g.server, g.svc, g.ns, g.counted

	var writes int32
	for range rounds {
		gate := make(chan struct{})
		svc.gate.Store(&gate)
		errs := make(chan error, calls)
		start := make(chan struct{})
		var ready sync.WaitGroup
		for range calls {
			ready.Add(1)
			go func() {
				ready.Done()
				<-start
				_, err := enqueue(context.Background(), ns, []byte("x"))
				errs <- err
			}()
		}
		ready.Wait()
		before := counted.writes.Load()
		close(start) // the calls are made at one moment
		waitFor(t, func() bool { return server.serving.Load() == calls })
		writes += counted.writes.Load() - before
		close(gate)
		for range calls {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		// Any Finish of these calls is written before the next round
		// counts: the server holds no answer but the bootstrap's.
		waitFor(t, func() bool { return heldAnswers(server) == 1 })
	}
	// Without the yield nearly every call takes a write of its own
	// (147-160 here); with it 20-50, and up to 85 under the race detector,
	// which slows the building of each call so that fewer join a write.
	t.Logf("%d Calls in %d writes", calls*rounds, writes)
	if most := calls * rounds * 3 / 4; writes > int32(most) {
		t.Errorf("%d Calls made %d at a time took %d stream writes; want at most %d", calls*rounds, calls, writes, most)
	}
}

// A standard client (capnp-go's rpc.Conn) calling our server: the
// interoperability third-party clients rely on.
func TestCapnpGoClientCallsOurServer(t *testing.T) {
	noLeaks(t)
	a, b := tcpPair(t)
	server := NewConn(b, Options{Bootstrap: capnp.Client(schema.NodeService_ServerToClient(newService()))})
	defer server.Close()
	client := capnprpc.NewConn(capnprpc.NewStreamTransport(a), nil)
	defer client.Close()
	ns := schema.NodeService(client.Bootstrap(context.Background()))
	exercise(t, ns)
	ns.Release()
	// capnp-go's Finish messages (sent late) find no answer and are
	// ignored; the bootstrap's Finish drops its answer.
	waitFor(t, func() bool { return heldAnswers(server) == 0 })
	select {
	case <-server.Done():
		t.Fatalf("server ended: %v", server.Err())
	default:
	}
}

// Our client calling capnp-go's server, which wants a Finish for every
// Return.
func TestOurClientCallsCapnpGoServer(t *testing.T) {
	noLeaks(t)
	a, b := tcpPair(t)
	server := capnprpc.NewConn(capnprpc.NewStreamTransport(b), &capnprpc.Options{
		BootstrapClient: capnp.Client(schema.NodeService_ServerToClient(newService())),
	})
	defer server.Close()
	client := NewConn(a, Options{})
	defer client.Close()
	ns := schema.NodeService(client.Bootstrap())
	defer ns.Release()
	exercise(t, ns)
	waitFor(t, func() bool {
		client.mu.Lock()
		defer client.mu.Unlock()
		return len(client.questions) == 1
	})
}

func TestCancelSendsFinish(t *testing.T) {
	noLeaks(t)
	svc := newService()
	client, _ := pair(t, svc)
	ns := schema.NodeService(client.Bootstrap())
	defer ns.Release()

	ctx, cancel := context.WithCancel(context.Background())
	f, release := ns.FetchWait(ctx, nil)
	defer release()
	<-svc.waiting
	cancel()
	if _, err := f.Struct(); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled call: err = %v; want context.Canceled", err)
	}
	// The Finish reached the server and canceled the call's context.
	select {
	case err := <-svc.canceled:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("server saw %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the server's call was not canceled")
	}
	// The connection is still good.
	if _, err := health(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
}

func TestConnEndFailsCallsInFlight(t *testing.T) {
	noLeaks(t)
	svc := newService()
	client, server := pair(t, svc)
	ns := schema.NodeService(client.Bootstrap())
	defer ns.Release()
	f, release := ns.FetchWait(context.Background(), nil)
	defer release()
	<-svc.waiting
	server.Close()
	_, err := f.Struct()
	if exc.TypeOf(err) != exc.Disconnected {
		t.Fatalf("call in flight when the peer ended: err = %v (type %v); want disconnected", err, exc.TypeOf(err))
	}
	<-client.Done()
	if _, err := health(context.Background(), ns); exc.TypeOf(err) != exc.Disconnected {
		t.Fatalf("call after the end: err = %v; want disconnected", err)
	}
}

func TestNoBootstrapOffered(t *testing.T) {
	noLeaks(t)
	a, b := tcpPair(t)
	server := NewConn(b, Options{})
	defer server.Close()
	client := NewConn(a, Options{})
	defer client.Close()
	ns := schema.NodeService(client.Bootstrap())
	defer ns.Release()
	_, err := health(context.Background(), ns)
	if errcode.Of(err) != errcode.FailedPrecondition {
		t.Fatalf("call to a Conn with no bootstrap: err = %v; want failed-precondition", err)
	}
}

func TestUnknownMethod(t *testing.T) {
	noLeaks(t)
	client, _ := pair(t, newService())
	c := client.Bootstrap()
	defer c.Release()
	f, release := c.SendCall(context.Background(), capnp.Send{
		Method: capnp.Method{InterfaceID: schema.NodeService_TypeID, MethodID: 999},
	})
	defer release()
	_, err := f.Struct()
	if exc.TypeOf(err) != exc.Unimplemented {
		t.Fatalf("unknown method: err = %v; want unimplemented", err)
	}
	// Like every error on the wire, its text has a stable code.
	if c, ok := errcode.Find(err); !ok || c != errcode.FailedPrecondition {
		t.Fatalf("unknown method: err = %v; want the code failed-precondition", err)
	}
}

// rawPeer is a hand-written peer for protocol violations.
type rawPeer struct {
	t    *testing.T
	conn net.Conn
	dec  *capnp.Decoder
}

func newRawPeer(t *testing.T, opts Options) (*rawPeer, *Conn) {
	a, b := tcpPair(t)
	if !opts.Bootstrap.IsValid() {
		opts.Bootstrap = capnp.Client(schema.NodeService_ServerToClient(newService()))
	}
	c := NewConn(b, opts)
	t.Cleanup(func() { c.Close(); a.Close() })
	return &rawPeer{t: t, conn: a, dec: capnp.NewDecoder(a)}, c
}

func (p *rawPeer) send(build func(rpccp.Message) error) {
	p.t.Helper()
	m := newMessage()
	if err := build(m); err != nil {
		p.t.Fatal(err)
	}
	b, err := m.Message().Marshal()
	if err != nil {
		p.t.Fatal(err)
	}
	if _, err := p.conn.Write(b); err != nil {
		p.t.Fatal(err)
	}
}

func (p *rawPeer) recv() rpccp.Message {
	p.t.Helper()
	p.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	msg, err := p.dec.Decode()
	if err != nil {
		p.t.Fatal(err)
	}
	m, err := rpccp.ReadRootMessage(msg)
	if err != nil {
		p.t.Fatal(err)
	}
	return m
}

func bootstrapMsg(id uint32) func(rpccp.Message) error {
	return func(m rpccp.Message) error {
		b, err := m.NewBootstrap()
		b.SetQuestionId(id)
		return err
	}
}

// expectAbort reads until an Abort and checks the Conn ended.
func (p *rawPeer) expectAbort(c *Conn, want string) {
	p.t.Helper()
	for {
		m := p.recv()
		if m.Which() != rpccp.Message_Which_abort {
			continue
		}
		e, _ := m.Abort()
		reason, _ := e.Reason()
		if reason != "twoparty: protocol violation: "+want {
			p.t.Fatalf("abort reason %q; want the violation %q", reason, want)
		}
		break
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		p.t.Fatal("the Conn did not end")
	}
}

func TestProtocolViolationsEndTheConn(t *testing.T) {
	noLeaks(t)
	t.Run("question id reused", func(t *testing.T) {
		p, c := newRawPeer(t, Options{})
		p.send(bootstrapMsg(7))
		p.send(bootstrapMsg(7))
		p.expectAbort(c, "question id in use")
	})
	t.Run("too many answers", func(t *testing.T) {
		p, c := newRawPeer(t, Options{MaxAnswers: 2})
		for id := range uint32(3) {
			p.send(bootstrapMsg(id))
		}
		p.expectAbort(c, "too many questions open")
	})
	t.Run("return for no question", func(t *testing.T) {
		p, c := newRawPeer(t, Options{})
		p.send(func(m rpccp.Message) error {
			r, err := m.NewReturn()
			r.SetAnswerId(42)
			return err
		})
		p.expectAbort(c, "return for a question not asked")
	})
	t.Run("message too large", func(t *testing.T) {
		p, c := newRawPeer(t, Options{MaxMessageSize: 1024})
		p.send(func(m rpccp.Message) error {
			e, err := m.NewAbort()
			if err == nil {
				err = e.SetReason(string(make([]byte, 4096)))
			}
			return err
		})
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("an oversized message did not end the Conn")
		}
	})
}

func TestFinishAndReleaseFreeTheBootstrap(t *testing.T) {
	noLeaks(t)
	p, c := newRawPeer(t, Options{})
	p.send(bootstrapMsg(0))
	m := p.recv()
	ret, _ := m.Return()
	payload, _ := ret.Results()
	caps, _ := payload.CapTable()
	if m.Which() != rpccp.Message_Which_return || ret.Which() != rpccp.Return_Which_results ||
		caps.Len() != 1 || caps.At(0).Which() != rpccp.CapDescriptor_Which_senderHosted || caps.At(0).SenderHosted() != bootstrapExport {
		t.Fatalf("bootstrap answer: %v; want results holding export %d", m, bootstrapExport)
	}
	// A call on the import (as capnp-go makes once the bootstrap resolved).
	p.send(func(m rpccp.Message) error {
		call, err := m.NewCall()
		if err != nil {
			return err
		}
		call.SetQuestionId(1)
		call.SetInterfaceId(schema.NodeService_TypeID)
		call.SetMethodId(5) // health
		target, err := call.NewTarget()
		target.SetImportedCap(bootstrapExport)
		return err
	})
	m = p.recv()
	ret, _ = m.Return()
	if ret.AnswerId() != 1 || ret.Which() != rpccp.Return_Which_results || !ret.NoFinishNeeded() {
		t.Fatalf("health on the import: %v; want results with noFinishNeeded", m)
	}
	p.send(func(m rpccp.Message) error {
		r, err := m.NewRelease()
		r.SetId(bootstrapExport)
		r.SetReferenceCount(1)
		return err
	})
	p.send(func(m rpccp.Message) error {
		f, err := m.NewFinish()
		f.SetQuestionId(0)
		return err
	})
	// An unknown message is echoed as unimplemented.
	p.send(func(m rpccp.Message) error {
		_, err := m.NewDisembargo()
		return err
	})
	m = p.recv()
	if m.Which() != rpccp.Message_Which_unimplemented {
		t.Fatalf("reply to a disembargo: %v; want unimplemented", m)
	}
	if answers := heldAnswers(c); answers != 0 {
		t.Fatalf("%d answers left after the bootstrap's Finish; want 0", answers)
	}
}

// heldAnswers is how many questions of its peer c holds answers for.
func heldAnswers(c *Conn) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.answers)
}

// noLeaks checks, after the test's other cleanups, that it left no
// goroutine running.
func noLeaks(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The reader never waits for the peer to read: over a pipe that holds
// nothing (net.Pipe), a peer that asks for the bootstrap (which needs a
// Return) and reads nothing still has its next message read — here an
// Abort, which ends the Conn. A reader that wrote the Return itself would
// block on it and never see the Abort.
func TestReaderDoesNotWaitForThePeerToRead(t *testing.T) {
	noLeaks(t)
	a, b := net.Pipe()
	defer a.Close()
	c := NewConn(b, Options{Bootstrap: capnp.Client(schema.NodeService_ServerToClient(newService()))})
	defer c.Close()
	sent := make(chan error, 1)
	go func() {
		for _, m := range [][]byte{
			encode(t, bootstrapMsg(0)),
			encode(t, func(m rpccp.Message) error {
				e, err := m.NewAbort()
				if err == nil {
					err = e.SetReason("bye")
				}
				return err
			}),
		} {
			if _, err := a.Write(m); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the Conn is still up: its reader never read the peer's Abort")
	}
	if err := <-sent; err != nil {
		t.Fatalf("the peer could not send: %v", err)
	}
	var abort *peerAbort
	if !errors.As(c.Err(), &abort) {
		t.Fatalf("Conn ended with %v, want the peer's abort", c.Err())
	}
}

// A peer that keeps sending messages needing an answer while it reads
// none ends the Conn once more than maxPending bytes of answers wait for
// it, instead of queueing them without bound.
func TestPeerThatNeverReadsEndsTheConn(t *testing.T) {
	noLeaks(t)
	a, b := net.Pipe()
	defer a.Close()
	c := NewConn(b, Options{Bootstrap: capnp.Client(schema.NodeService_ServerToClient(newService()))})
	defer c.Close()
	// A Resolve is echoed back as Unimplemented, whole.
	resolve := encode(t, func(m rpccp.Message) error {
		r, err := m.NewResolve()
		if err != nil {
			return err
		}
		e, err := r.NewException()
		if err != nil {
			return err
		}
		return e.SetReason(strings.Repeat("x", 8<<10))
	})
	go func() {
		for range 2 * maxPending / len(resolve) {
			if _, err := a.Write(resolve); err != nil {
				return // the Conn ended
			}
		}
	}()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the Conn is still up with the peer reading nothing")
	}
	if !errors.Is(c.Err(), ErrPeerNotReading) {
		t.Fatalf("Conn ended with %v, want %v", c.Err(), ErrPeerNotReading)
	}
}

// A protocol violation from a peer that reads nothing still ends the
// Conn: the Abort that says why is given abortWriteLimit, not forever.
func TestAbortToAPeerThatNeverReads(t *testing.T) {
	noLeaks(t)
	a, b := net.Pipe()
	defer a.Close()
	c := NewConn(b, Options{Bootstrap: capnp.Client(schema.NodeService_ServerToClient(newService()))})
	defer c.Close()
	go func() {
		for range 2 { // the same question id twice
			if _, err := a.Write(encode(t, bootstrapMsg(7))); err != nil {
				return
			}
		}
	}()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the Conn is still up: its Abort waits for a peer that does not read")
	}
	if err := c.Err(); err == nil || !strings.Contains(err.Error(), "question id in use") {
		t.Fatalf("Conn ended with %v, want the protocol violation", err)
	}
}
