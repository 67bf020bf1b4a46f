package rpc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3"
	"github.com/quic-go/quic-go"

	"github.com/quicproquo/qpq/schema"
)

// Defaults of ListenOptions' zero values.
const (
	DefaultMaxConnections = 16384
	// DefaultIdleTimeout closes a connection that carried nothing, not even
	// a keep-alive, for this long. Clients send keep-alives (Dial does), so
	// a connection holding a long fetchWait stays up.
	DefaultIdleTimeout = 90 * time.Second
	// streamAcceptTimeout bounds how long a new connection may take to open
	// its RPC stream.
	streamAcceptTimeout = 10 * time.Second
)

// ListenOptions tune a Listener. The zero value means the documented
// defaults.
type ListenOptions struct {
	// MaxConnections caps concurrent connections; more are closed at once.
	// 0 means DefaultMaxConnections.
	MaxConnections int
	// IdleTimeout is QUIC's idle timeout; 0 means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// Serve tunes each connection's RPC.
	Serve ServeOptions
	// Logger receives connection events at debug level; nil discards.
	Logger *slog.Logger
}

// Peer describes the remote end of an accepted connection.
type Peer struct {
	Addr netip.AddrPort
	// TLS is the connection's handshake: the certificates a peer
	// presented when the TLS configuration asked for them (ListenTLS).
	TLS tls.ConnectionState
}

// RefusedCode is the QUIC application error code of a connection a
// listener closes because it refuses the peer (ServeHooks); the reason
// text says why.
const RefusedCode quic.ApplicationErrorCode = 0x1

// Listener accepts NodeService connections over QUIC.
type Listener struct {
	ql   *quic.Listener
	tr   *quic.Transport
	udp  *net.UDPConn // ours to close: a Transport does not close a socket it was given
	opts ListenOptions
	log  *slog.Logger
}

// Listen starts listening on addr ("host:port") with cert, for
// NodeService clients (ALPN "capnp", no client certificates).
func Listen(addr string, cert tls.Certificate, opts ListenOptions) (*Listener, error) {
	return ListenTLS(addr, ServerTLSConfig(cert, ALPN), opts)
}

// ListenTLS is Listen with the caller's TLS configuration (its own ALPN,
// client certificates); it must require TLS 1.3.
func ListenTLS(addr string, tlsConf *tls.Config, opts ListenOptions) (*Listener, error) {
	if opts.MaxConnections <= 0 {
		opts.MaxConnections = DefaultMaxConnections
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	opts.Serve.setDefaults()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("rpc: listen on %s: %w", addr, err)
	}
	udp, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("rpc: listen on %s: %w", addr, err)
	}
	// Our own Transport, so that closing the listener closes the socket and
	// its goroutines at once rather than after the last connection drains.
	// With a reset key, a client whose connection this server no longer
	// has (it crashed or restarted) is told so by its next packet, instead
	// of waiting out the idle timeout with its calls unanswered.
	tr := &quic.Transport{Conn: udp, StatelessResetKey: statelessResetKey(tlsConf)}
	ql, err := tr.Listen(tlsConf, &quic.Config{
		MaxIdleTimeout:        opts.IdleTimeout,
		MaxIncomingStreams:    1, // the RPC stream
		MaxIncomingUniStreams: -1,
	})
	if err != nil {
		tr.Close()
		udp.Close()
		return nil, fmt.Errorf("rpc: listen on %s: %w", addr, err)
	}
	return &Listener{ql: ql, tr: tr, udp: udp, opts: opts, log: opts.Logger}, nil
}

// Addr returns the UDP address the listener is bound to.
func (l *Listener) Addr() net.Addr { return l.ql.Addr() }

// Serve accepts connections until ctx ends, serving each with the
// NodeService implementation newService returns for its peer. It closes
// the listener and every connection, waits for them, and returns nil when
// ctx ends, or the accept error that stopped it.
func (l *Listener) Serve(ctx context.Context, newService func(Peer) schema.NodeService_Server) error {
	return l.ServeHooks(ctx, func(p Peer) (capnp.ClientHook, error) {
		return schema.NodeService_NewServer(newService(p)), nil
	})
}

// ServeHooks is Serve for any capability: admit returns the bootstrap
// server (a generated <Interface>_NewServer) for a peer, or an error,
// which closes the connection with RefusedCode and the error's text as
// the reason the peer sees. admit runs once the handshake is done, before
// the peer's stream is accepted.
func (l *Listener) ServeHooks(ctx context.Context, admit func(Peer) (capnp.ClientHook, error)) error {
	defer l.closeTransport() // runs last, once every connection has ended
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel has ended every connection
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { l.ql.Close() })
	defer stop()
	slots := make(chan struct{}, l.opts.MaxConnections)
	for {
		qc, err := l.ql.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, quic.ErrServerClosed) {
				return nil
			}
			return fmt.Errorf("rpc: accept: %w", err)
		}
		select {
		case slots <- struct{}{}:
		default:
			l.log.Warn("connection refused: too many connections", "max", l.opts.MaxConnections)
			qc.CloseWithError(0, "server busy")
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			l.serveConn(ctx, qc, admit)
		}()
	}
}

// Close stops accepting; Serve then closes every connection and returns.
// Close a Listener that was never served with Close too.
func (l *Listener) Close() error {
	err := l.ql.Close()
	if cerr := l.closeTransport(); err == nil {
		err = cerr
	}
	return err
}

func (l *Listener) closeTransport() error {
	err := l.tr.Close()
	if cerr := l.udp.Close(); err == nil && !errors.Is(cerr, net.ErrClosed) {
		err = cerr
	}
	return err
}

func (l *Listener) serveConn(ctx context.Context, qc *quic.Conn, admit func(Peer) (capnp.ClientHook, error)) {
	peer := Peer{Addr: addrPort(qc.RemoteAddr()), TLS: qc.ConnectionState().TLS}
	hook, err := admit(peer)
	if err != nil {
		qc.CloseWithError(RefusedCode, err.Error())
		return
	}
	actx, cancel := context.WithTimeout(ctx, streamAcceptTimeout)
	st, err := qc.AcceptStream(actx)
	cancel()
	if err != nil {
		hook.Shutdown()
		qc.CloseWithError(0, "no RPC stream")
		return
	}
	l.log.Debug("connection", "peer", peer.Addr)
	// The QUIC connection ends with its one stream.
	ServeHook(ctx, &quicStream{Stream: st, conn: qc}, hook, l.opts.Serve)
}

// quicStream closes its whole connection on Close.
type quicStream struct {
	*quic.Stream
	conn *quic.Conn
}

func (s *quicStream) Close() error {
	s.Stream.CancelRead(0)
	err := s.Stream.Close()
	s.conn.CloseWithError(0, "")
	return err
}

func addrPort(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		ap := u.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
