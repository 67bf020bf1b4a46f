package rpc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quicproquo/qpq/rpc/twoparty"
	"github.com/quicproquo/qpq/schema"
)

// DefaultKeepAlive is how often Dial's connections send a keep-alive, so
// that an idle connection (one waiting in fetchWait) is not timed out.
const DefaultKeepAlive = 20 * time.Second

// ErrNoPin is returned by Dial when neither a fingerprint nor
// TrustOnFirstUse is given.
var ErrNoPin = errors.New("rpc: no server fingerprint pinned; pass the server's fingerprint, or TrustOnFirstUse to learn it")

// DialOptions say how to reach and trust a server. The zero value trusts
// nothing: set Pin, or TrustOnFirstUse. DialStream, which takes the trust
// in its TLS configuration, uses only the other fields.
type DialOptions struct {
	// Pin is the fingerprint the server must present.
	Pin Fingerprint
	// TrustOnFirstUse accepts any server certificate when Pin is zero;
	// the caller reads Conn.Fingerprint and pins it from then on.
	TrustOnFirstUse bool
	// KeepAlive is the keep-alive period; 0 means DefaultKeepAlive.
	KeepAlive time.Duration
	// IdleTimeout is QUIC's idle timeout; 0 means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// Transport, if set, sends over its UDP socket instead of a new one
	// per connection (for processes holding thousands of connections).
	Transport *quic.Transport
}

// Conn is a client's RPC connection to one NodeService.
type Conn struct {
	rc     *twoparty.Conn
	qc     *quic.Conn // nil when made by NewConn over another stream
	fp     Fingerprint
	client *Client
}

// Dial connects to the NodeService at addr ("host:port") over QUIC.
func Dial(ctx context.Context, addr string, opts DialOptions) (*Conn, error) {
	if opts.Pin.IsZero() && !opts.TrustOnFirstUse {
		return nil, ErrNoPin
	}
	var seen Fingerprint
	qc, st, err := DialStream(ctx, addr, PinnedClientTLSConfig(ALPN, opts.Pin, opts.Pin.IsZero(), &seen), opts)
	if err != nil {
		return nil, err
	}
	c := NewConn(st)
	c.qc, c.fp = qc, seen
	return c, nil
}

// DialStream connects to addr over QUIC with tlsConf (which says how the
// server is trusted and which ALPN to ask for; see PinnedClientTLSConfig)
// and opens the connection's one RPC stream. Closing the stream closes
// the connection. The keep-alive, idle timeout and transport of opts
// apply. A server that presents a certificate other than a pinned one is
// reported as a *FingerprintMismatchError.
func DialStream(ctx context.Context, addr string, tlsConf *tls.Config, opts DialOptions) (*quic.Conn, io.ReadWriteCloser, error) {
	if opts.KeepAlive <= 0 {
		opts.KeepAlive = DefaultKeepAlive
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	// quic-go reports a failed certificate check as a TLS alert; keep
	// the check's own error to give the caller the typed one.
	var refused error
	tlsConf = tlsConf.Clone()
	if verify := tlsConf.VerifyPeerCertificate; verify != nil {
		tlsConf.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
			refused = verify(raw, chains)
			return refused
		}
	}
	qconf := &quic.Config{KeepAlivePeriod: opts.KeepAlive, MaxIdleTimeout: opts.IdleTimeout}
	var qc *quic.Conn
	var err error
	if opts.Transport != nil {
		var ua *net.UDPAddr
		if ua, err = net.ResolveUDPAddr("udp", addr); err == nil {
			qc, err = opts.Transport.Dial(ctx, ua, tlsConf, qconf)
		}
	} else {
		qc, err = quic.DialAddr(ctx, addr, tlsConf, qconf)
	}
	if err != nil {
		var mismatch *FingerprintMismatchError
		if errors.As(refused, &mismatch) {
			return nil, nil, mismatch
		}
		return nil, nil, fmt.Errorf("rpc: dial %s: %w", addr, err)
	}
	st, err := qc.OpenStreamSync(ctx)
	if err != nil {
		qc.CloseWithError(0, "")
		return nil, nil, fmt.Errorf("rpc: open stream to %s: %w", addr, err)
	}
	return qc, &quicStream{Stream: st, conn: qc}, nil
}

// NewConn starts the client side of an RPC connection over stream (for
// instance a libp2p stream) and takes ownership of it.
func NewConn(stream io.ReadWriteCloser) *Conn {
	// Replies are bounded by the server's limits; the decoder keeps
	// capnp's default cap (64 MiB) as the backstop.
	rc := twoparty.NewConn(stream, twoparty.Options{})
	ns := schema.NodeService(rc.Bootstrap())
	return &Conn{rc: rc, client: NewClient(ns)}
}

// Client returns the typed NodeService client of the connection.
func (c *Conn) Client() *Client { return c.client }

// Fingerprint returns the server certificate's fingerprint Dial saw (zero
// for connections made by NewConn).
func (c *Conn) Fingerprint() Fingerprint { return c.fp }

// Err reports why a QUIC connection ended (for instance the peer's close
// reason or an idle timeout), or nil while it is up or when it was made by
// NewConn.
func (c *Conn) Err() error {
	if c.qc == nil || c.qc.Context().Err() == nil {
		return nil
	}
	return context.Cause(c.qc.Context())
}

// Done is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.rc.Done() }

// Close releases the client and ends the connection. It is idempotent.
func (c *Conn) Close() error {
	c.client.release()
	c.rc.Close()
	if c.qc != nil {
		c.qc.CloseWithError(0, "")
	}
	return nil
}
