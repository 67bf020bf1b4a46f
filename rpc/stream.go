package rpc

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"sync/atomic"

	"capnproto.org/go/capnp/v3"
	capnprpc "capnproto.org/go/capnp/v3/rpc"

	"github.com/quicproquo/qpq/rpc/errcode"
	"github.com/quicproquo/qpq/schema"
)

// Defaults of ServeOptions' zero values.
const (
	// DefaultMaxMessageSize bounds one Cap'n Proto message a server
	// accepts: a 1 MiB payload plus room for the other fields.
	DefaultMaxMessageSize = 2 << 20
	// DefaultMaxPendingCalls bounds the calls in flight on one connection.
	DefaultMaxPendingCalls = 64
)

// ServeOptions tune the server side of one RPC connection. The zero value
// means the documented defaults.
type ServeOptions struct {
	// MaxMessageSize is the largest Cap'n Proto message accepted, in
	// bytes; 0 means DefaultMaxMessageSize.
	MaxMessageSize uint64
	// MaxPendingCalls is how many calls may be in flight at once on the
	// connection; more are refused with resource-exhausted. 0 means
	// DefaultMaxPendingCalls.
	MaxPendingCalls int
	// Logger receives the RPC system's own diagnostics at debug level;
	// nil discards them.
	Logger *slog.Logger
}

func (o *ServeOptions) setDefaults() {
	if o.MaxMessageSize == 0 {
		o.MaxMessageSize = DefaultMaxMessageSize
	}
	if o.MaxPendingCalls <= 0 {
		o.MaxPendingCalls = DefaultMaxPendingCalls
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// ServeStream serves impl as the bootstrap capability of a two-party RPC
// connection over stream until the peer hangs up or ctx ends. It closes
// stream before returning.
func ServeStream(ctx context.Context, stream io.ReadWriteCloser, impl schema.NodeService_Server, opts ServeOptions) {
	ServeHook(ctx, stream, schema.NodeService_NewServer(impl), opts)
}

// ServeHook is ServeStream for any capability: server is what a
// generated <Interface>_NewServer returns (for instance
// schema.FederationService_NewServer). The limits of opts apply alike.
func ServeHook(ctx context.Context, stream io.ReadWriteCloser, server capnp.ClientHook, opts ServeOptions) {
	opts.setDefaults()
	conn := capnprpc.NewConn(NewTransport(stream, opts.MaxMessageSize), &capnprpc.Options{
		BootstrapClient: capnp.NewClient(&boundedHook{ClientHook: server, max: int64(opts.MaxPendingCalls)}),
		Logger:          DebugLogger(opts.Logger),
	})
	select {
	case <-conn.Done():
	case <-ctx.Done():
	}
	conn.Close()
}

// NewTransport returns the Cap'n Proto RPC transport of every quicproquo
// link: the standard unpacked stream framing, reading messages of at most
// maxMessage bytes (0 means capnp's default, 64 MiB) and writing each
// message with a single Write. Closing the transport closes stream. Every
// RPC connection of this module (home server, federation, P2P link) runs
// on it.
func NewTransport(stream io.ReadWriteCloser, maxMessage uint64) capnprpc.Transport {
	dec := capnp.NewDecoder(stream)
	if maxMessage > 0 {
		dec.MaxMessageSize = maxMessage
	}
	c := &streamCodec{Decoder: dec, w: stream, Closer: stream}
	c.enc = capnp.NewEncoder(&c.buf)
	return capnprpc.NewTransport(c)
}

// streamCodec is capnprpc.NewStreamTransport's framing (unpacked, as the
// standard stream transport) with a message size limit of our choosing,
// and one write per message: capnp's encoder writes the frame header and
// each segment separately, and on QUIC a message split over writes can
// leave as several packets, the later ones held by the pacer (costing a
// millisecond-scale timer tick for a 1 KiB message).
type streamCodec struct {
	*capnp.Decoder
	io.Closer
	w   io.Writer
	buf bytes.Buffer   // one encoded message; used by Encode only
	enc *capnp.Encoder // writes into buf
}

// maxKeptBuffer bounds the encode buffer kept between messages.
const maxKeptBuffer = 256 << 10

// Encode frames m and writes it with a single Write. The RPC system calls
// it from one goroutine at a time.
func (c *streamCodec) Encode(m *capnp.Message) error {
	c.buf.Reset()
	if err := c.enc.Encode(m); err != nil {
		return err
	}
	_, err := c.w.Write(c.buf.Bytes())
	if c.buf.Cap() > maxKeptBuffer {
		c.buf = bytes.Buffer{}
	}
	return err
}

func (*streamCodec) ReleaseMessage(*capnp.Message) {}

// boundedHook counts the calls in flight through a server capability and
// refuses new ones beyond max before they are queued.
type boundedHook struct {
	capnp.ClientHook
	pending atomic.Int64
	max     int64
}

var errTooManyCalls = errcode.New(errcode.ResourceExhausted, "too many calls in flight on this connection")

func (h *boundedHook) Recv(ctx context.Context, r capnp.Recv) capnp.PipelineCaller {
	if h.pending.Add(1) > h.max {
		h.pending.Add(-1)
		r.Reject(errTooManyCalls)
		return nil
	}
	r.Returner = &countedReturner{Returner: r.Returner, done: func() { h.pending.Add(-1) }}
	return h.ClientHook.Recv(ctx, r)
}

type countedReturner struct {
	capnp.Returner
	done func()
}

func (r *countedReturner) Return() {
	r.Returner.Return()
	r.done()
}

// DebugLogger adapts l for capnprpc.Options.Logger, sending everything
// the RPC system logs to debug level: it reports per-connection trouble (a
// peer hanging up mid-call, a link going away) that is not the operator's
// concern; calls' own errors reach their callers.
func DebugLogger(l *slog.Logger) capnprpc.Logger {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return debugLogger{l}
}

type debugLogger struct{ l *slog.Logger }

func (d debugLogger) Debug(msg string, args ...any) { d.l.Debug(msg, args...) }
func (d debugLogger) Info(msg string, args ...any)  { d.l.Debug(msg, args...) }
func (d debugLogger) Warn(msg string, args ...any)  { d.l.Debug(msg, args...) }
func (d debugLogger) Error(msg string, args ...any) { d.l.Debug(msg, args...) }
