package twoparty

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exc"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// DefaultMaxAnswers is Options.MaxAnswers' default.
const DefaultMaxAnswers = 1024

// readBuffer is the size of the buffered reader in front of the stream:
// a message's frame header and segments are read in several small reads.
const readBuffer = 16 << 10

// ErrClosed is the cause of a Conn ended by Close.
var ErrClosed = errors.New("twoparty: connection closed")

// ErrPeerNotReading ends a Conn whose peer keeps sending messages that need
// an answer while it reads none: more than maxPending bytes of them queued.
var ErrPeerNotReading = errors.New("twoparty: the peer does not read what it asked for")

// Options configure a Conn. The zero value offers no bootstrap capability
// and uses the documented defaults.
type Options struct {
	// Bootstrap is the capability answered to the peer's Bootstrap
	// messages. The Conn owns it and releases it when it ends. The zero
	// Client offers none: the peer's Bootstrap gets an exception.
	Bootstrap capnp.Client
	// MaxMessageSize bounds one incoming message in bytes; 0 means
	// capnp's decoder default (64 MiB). A larger message ends the Conn.
	MaxMessageSize uint64
	// MaxAnswers bounds the calls and bootstrap answers the peer may hold
	// open at once; 0 means DefaultMaxAnswers. More end the Conn.
	MaxAnswers int
	// Logger receives per-connection diagnostics at debug level; nil
	// discards them.
	Logger *slog.Logger
}

// Conn is one two-party RPC connection over a byte stream. Its methods
// are safe for concurrent use.
type Conn struct {
	stream     io.ReadWriteCloser
	bootstrap  capnp.Client
	maxAnswers int
	log        *slog.Logger

	ctx    context.Context // parent of the calls served; ends with the Conn
	cancel context.CancelCauseFunc
	done   chan struct{} // closed when the reader has stopped and all is released

	wmu     sync.Mutex // guards the fields below: the write combiner
	wcond   sync.Cond  // signalled when the writer took pending
	writing bool       // a goroutine is writing to stream
	pending *frameBuf  // frames queued behind it, in order; nil when none

	ended atomic.Bool // set once the Conn has ended (err is set)

	// serving counts the calls being served whose Return is not yet
	// written (c.mu guards changes; write reads it without).
	serving atomic.Int32
	// asking counts this side's calls whose Return has not arrived (the
	// same rules as serving).
	asking atomic.Int32

	mu        sync.Mutex // guards the fields below
	err       error      // why the Conn ended; nil while it is up
	questions map[uint32]*question
	freeIDs   []uint32 // question ids free for reuse
	nextID    uint32   // lowest id never used
	answers   map[uint32]*answer
}

// NewConn starts an RPC connection over stream and takes ownership of
// it: the Conn closes stream when it ends. stream's Close must interrupt
// a blocked Read and Write.
func NewConn(stream io.ReadWriteCloser, opts Options) *Conn {
	if opts.MaxAnswers <= 0 {
		opts.MaxAnswers = DefaultMaxAnswers
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Conn{
		stream:     stream,
		bootstrap:  opts.Bootstrap,
		maxAnswers: opts.MaxAnswers,
		log:        opts.Logger,
		done:       make(chan struct{}),
		questions:  make(map[uint32]*question),
		answers:    make(map[uint32]*answer),
	}
	c.wcond.L = &c.wmu
	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	dec := capnp.NewDecoder(bufio.NewReaderSize(stream, readBuffer))
	dec.MaxMessageSize = opts.MaxMessageSize
	go c.read(dec)
	return c
}

// Done is closed when the Conn has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err reports why the Conn ended: ErrClosed after Close, the peer's
// Abort, a protocol violation or the stream's error. It is nil while the
// Conn is up.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close ends the Conn: calls in flight in either direction fail, the
// stream is closed and the bootstrap capability released. It waits for the
// reader to stop and is idempotent.
func (c *Conn) Close() error {
	c.fail(ErrClosed)
	<-c.done
	return nil
}

// read is the Conn's reader goroutine: it handles messages in order
// until the stream ends or the peer breaks the protocol.
func (c *Conn) read(dec *capnp.Decoder) {
	defer c.finish()
	for {
		msg, err := dec.Decode()
		if err != nil {
			c.fail(err)
			return
		}
		if err := c.handle(msg); err != nil {
			var pa *peerAbort
			if errors.As(err, &pa) {
				c.fail(err) // nothing to tell a peer that left
			} else {
				c.abort(err)
			}
			return
		}
	}
}

// finish runs when the reader stops: it makes sure the Conn is failed and
// releases the bootstrap capability, which lets a server.Server shut down
// once the calls it is running return.
func (c *Conn) finish() {
	c.fail(ErrClosed)
	c.bootstrap.Release()
	close(c.done)
}

// fail ends the Conn with cause, once: calls served are canceled, calls
// made fail as disconnected, and the stream is closed (which stops the
// reader).
func (c *Conn) fail(cause error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = cause
	c.ended.Store(true) // before the calls served are canceled: see write
	c.asking.Store(0)
	var pending []*question
	for id, q := range c.questions {
		if !q.resolved {
			q.resolved = true
			pending = append(pending, q)
		}
		delete(c.questions, id)
	}
	c.mu.Unlock()
	c.cancel(cause)
	c.stream.Close()
	err := &exc.Exception{Type: exc.Disconnected, Prefix: "rpc", Cause: cause}
	for _, q := range pending {
		q.stopWatch()
		q.p.Reject(err)
	}
	if cause != ErrClosed {
		c.log.Debug("rpc connection ended", "err", cause)
	}
}

// abort tells the peer why the Conn ends, then ends it. The Abort is a
// courtesy: a peer that does not read gets abortWriteLimit to take it.
func (c *Conn) abort(cause error) {
	m := newMessage()
	if e, err := m.NewAbort(); err == nil {
		setException(e, cause)
		written := make(chan struct{})
		go func() {
			defer close(written)
			// Queued behind a write in progress, the Abort is written by
			// that writer: wait until it has nothing left. Either ends
			// when the frames are written, or when fail closes the stream.
			c.write(m)
			c.wmu.Lock()
			for c.writing {
				c.wcond.Wait()
			}
			c.wmu.Unlock()
		}()
		t := time.NewTimer(abortWriteLimit)
		select {
		case <-written:
		case <-t.C:
		}
		t.Stop()
	}
	c.fail(cause)
}

// handle dispatches one incoming message. An error is a protocol
// violation that ends the Conn.
func (c *Conn) handle(msg *capnp.Message) error {
	m, err := rpccp.ReadRootMessage(msg)
	if err != nil {
		return protocolError("read message: " + err.Error())
	}
	switch m.Which() {
	case rpccp.Message_Which_call:
		return c.handleCall(msg, m)
	case rpccp.Message_Which_return:
		return c.handleReturn(msg, m)
	case rpccp.Message_Which_finish:
		defer msg.Release()
		return c.handleFinish(m)
	case rpccp.Message_Which_bootstrap:
		defer msg.Release()
		return c.handleBootstrap(m)
	case rpccp.Message_Which_release:
		// The only export is the bootstrap capability, which lives as
		// long as the Conn: counting its references would change nothing.
		msg.Release()
		return nil
	case rpccp.Message_Which_abort:
		defer msg.Release()
		reason := "no reason given"
		if e, err := m.Abort(); err == nil {
			if r, err := e.Reason(); err == nil && r != "" {
				reason = r
			}
		}
		return &peerAbort{reason: reason}
	case rpccp.Message_Which_unimplemented:
		defer msg.Release()
		return c.handleUnimplemented(m)
	default:
		// Capabilities are never passed, so resolve, disembargo and the
		// level 3 and 4 messages have nothing to act on.
		defer msg.Release()
		reply := newMessage()
		if err := reply.SetUnimplemented(m); err != nil {
			return protocolError("echo unimplemented message: " + err.Error())
		}
		c.post(reply)
		return nil
	}
}

// send writes m; a write error ends the Conn and is returned.
func (c *Conn) send(m rpccp.Message) error {
	err := c.write(m)
	if err != nil {
		c.fail(err)
	}
	return err
}

// Write combining: the goroutine that finds no write in progress writes
// its frame and then, in one Write each time, whatever frames other
// goroutines queued meanwhile, until none is left, without a writer
// goroutine and its hand-off. That alone rarely combines anything: a
// stream write is quick, so Returns woken together by one group commit,
// or calls made at once from several goroutines, would still each find
// the previous write done and go out alone, one QUIC packet and one
// sendmsg each. So the writer yields first while other calls are being
// served or other calls of ours are in flight; a lone call never waits.
// Frames keep the order they were queued in, which the protocol relies
// on (a Finish before the reuse of its question id).
//
// Frame buffers come from a pool shared by all Conns and go back after
// each write, so a steady stream of calls allocates none and an idle
// Conn holds none (a home server keeps thousands of idle connections).
const (
	// maxPending bounds the bytes queued behind a write in progress;
	// more wait until the writer takes them.
	maxPending = 256 << 10
	// maxYields bounds the times a writer lets other goroutines queue
	// frames before it writes.
	maxYields = 4
	// abortWriteLimit bounds how long the reader waits for its Abort to
	// be written before it ends the Conn anyway.
	abortWriteLimit = time.Second
	// maxPooledBuffer bounds a frame buffer put back in the pool.
	maxPooledBuffer = 256 << 10
)

// frameBuf is a pooled write buffer (a pointer, so that putting it back
// allocates nothing).
type frameBuf struct{ b []byte }

var frameBufs = sync.Pool{New: func() any { return &frameBuf{b: make([]byte, 0, 4<<10)} }}

func getFrameBuf() *frameBuf {
	f := frameBufs.Get().(*frameBuf)
	f.b = f.b[:0]
	return f
}

func putFrameBuf(f *frameBuf) {
	if f != nil && cap(f.b) <= maxPooledBuffer {
		frameBufs.Put(f)
	}
}

// write sends m as one frame, then releases m (its buffers go back to
// capnp's pool). When another goroutine is writing, the frame is queued
// behind it and write returns; a failure of that write ends the Conn,
// which fails everything waiting on it.
func (c *Conn) write(m rpccp.Message) error {
	msg := m.Message()
	defer msg.Release()
	// Nothing leaves once the Conn has ended: in particular not the
	// Return of a call that failed because its context was canceled by
	// the end, which the peer must see as the connection's end instead.
	if c.ended.Load() {
		return ErrClosed
	}
	c.wmu.Lock()
	if c.writing {
		for c.pendingLen() > maxPending && c.writing {
			c.wcond.Wait()
		}
		if c.writing {
			err := c.queueLocked(msg)
			c.wmu.Unlock()
			return err
		}
	}
	f, ferr := c.takeWriterLocked(msg)
	// While other calls are being served, those that finished with this
	// one may be runnable; while other calls of ours are in flight, more
	// may be being made (a node's outbox delivers in parallel). Let them
	// queue their frames first, for as long as more keep coming.
	for i := 0; i < maxYields && (c.serving.Load() > 0 || c.asking.Load() > 1); i++ {
		before := c.queuedBytes()
		runtime.Gosched()
		if c.queuedBytes() == before {
			break
		}
	}
	return c.writeOut(f, ferr)
}

// post is write for the reader goroutine, which must never wait for the
// peer to read (it would stop reading, and so never see the peer's Abort
// or the calls and Returns behind). Its frame joins the queue behind a
// write in progress, or is written by a goroutine of its own; frames keep
// their order either way. A peer that lets more than maxPending queue up
// behind a blocked write while it keeps sending has stopped reading: the
// Conn ends. A write error ends the Conn too.
func (c *Conn) post(m rpccp.Message) {
	msg := m.Message()
	defer msg.Release()
	if c.ended.Load() {
		return
	}
	c.wmu.Lock()
	if c.writing {
		if c.pendingLen() > maxPending {
			c.wmu.Unlock()
			c.fail(ErrPeerNotReading)
			return
		}
		err := c.queueLocked(msg)
		c.wmu.Unlock()
		if err != nil {
			c.fail(err)
		}
		return
	}
	f, ferr := c.takeWriterLocked(msg)
	go func() {
		if err := c.writeOut(f, ferr); err != nil {
			c.fail(err)
		}
	}()
}

// queueLocked frames msg behind the write in progress. c.wmu must be
// held.
func (c *Conn) queueLocked(msg *capnp.Message) error {
	if c.pending == nil {
		c.pending = getFrameBuf()
	}
	var err error
	c.pending.b, err = appendFrame(c.pending.b, msg)
	return err
}

// takeWriterLocked makes the caller the writer, unlocks c.wmu, and frames
// msg into a buffer of its own. A message that cannot be framed is not
// sent, but frames queued behind it meanwhile still are.
func (c *Conn) takeWriterLocked(msg *capnp.Message) (*frameBuf, error) {
	c.writing = true
	c.wmu.Unlock()
	f := getFrameBuf()
	var err error
	f.b, err = appendFrame(f.b, msg)
	return f, err
}

// writeOut is the writer's part of write: it writes f, with whatever was
// queued behind it, then what is queued meanwhile, until nothing is left,
// and gives up the writer's role. c.writing must be set by the caller.
func (c *Conn) writeOut(f *frameBuf, ferr error) error {
	c.wmu.Lock()
	if c.pending != nil {
		f.b = append(f.b, c.pending.b...)
		putFrameBuf(c.pending)
		c.pending = nil
		c.wcond.Broadcast()
	}
	c.wmu.Unlock()
	for {
		var err error
		if len(f.b) > 0 {
			_, err = c.stream.Write(f.b)
		}
		putFrameBuf(f)
		c.wmu.Lock()
		if err != nil || c.pendingLen() == 0 {
			// After a failed write the Conn ends; what was queued is
			// dropped with it.
			putFrameBuf(c.pending)
			c.pending = nil
			c.writing = false
			c.wcond.Broadcast()
			c.wmu.Unlock()
			return errors.Join(ferr, err)
		}
		f, c.pending = c.pending, nil
		c.wcond.Broadcast()
		c.wmu.Unlock()
	}
}

// pendingLen is the bytes queued behind the write in progress. c.wmu must
// be held.
func (c *Conn) pendingLen() int {
	if c.pending == nil {
		return 0
	}
	return len(c.pending.b)
}

// queuedBytes is pendingLen for a caller not holding c.wmu.
func (c *Conn) queuedBytes() int {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.pendingLen()
}

// newMessage returns an empty RPC message to fill in and send.
func newMessage() rpccp.Message {
	_, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		panic(err) // a fresh single-segment arena always has room for a root
	}
	m, err := rpccp.NewRootMessage(seg)
	if err != nil {
		panic(err)
	}
	return m
}

// setException fills e from err: the type capnp-go reports for it and its
// text as the reason.
func setException(e rpccp.Exception, err error) {
	e.SetType(rpccp.Exception_Type(exc.TypeOf(err)))
	e.SetReason(err.Error())
}

// exception turns a received exception into an error whose text is the
// reason (with the stable code package errcode parses) and whose type
// exc.TypeOf reports.
func exception(e rpccp.Exception) error {
	reason, _ := e.Reason()
	if reason == "" {
		reason = "exception with no reason"
	}
	return exc.New(exc.Type(e.Type()), "", reason)
}

// protocolError is a peer's violation of the RPC protocol.
type protocolError string

func (e protocolError) Error() string { return "twoparty: protocol violation: " + string(e) }

// peerAbort is the cause of a Conn the peer aborted.
type peerAbort struct{ reason string }

func (e *peerAbort) Error() string { return "twoparty: peer aborted: " + e.reason }
