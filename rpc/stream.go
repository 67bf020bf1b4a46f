package rpc

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/rpc/errcode"
	"github.com/quicproquo/qpq/rpc/twoparty"
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
	conn := twoparty.NewConn(stream, twoparty.Options{
		Bootstrap:      capnp.NewClient(&boundedHook{ClientHook: server, max: int64(opts.MaxPendingCalls)}),
		MaxMessageSize: opts.MaxMessageSize,
		Logger:         opts.Logger,
	})
	select {
	case <-conn.Done():
	case <-ctx.Done():
	}
	conn.Close()
}

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
