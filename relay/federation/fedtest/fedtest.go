// Package fedtest prepares home servers for federation tests on
// loopback: a data directory holding the server's certificate (what peers
// pin), and a free UDP address for its federation listener, both known
// before any server starts so that each can be configured with the
// others. It holds no server: tests start real ones (relay.Open,
// server.Start) from a Home.
package fedtest

import (
	"crypto/tls"
	"net"
	"testing"

	"github.com/quicproquo/qpq/relay/federation"
	"github.com/quicproquo/qpq/rpc"
)

// Home is a home server-to-be of one domain.
type Home struct {
	Domain      string
	Dir         string // data directory, with tls/cert.pem and key.pem
	Addr        string // federation listen address, 127.0.0.1:port
	Cert        tls.Certificate
	Fingerprint rpc.Fingerprint
}

// NewHome makes the data directory and certificate of domain's server and
// picks a free loopback port for its federation listener. The port is
// free when picked; a test binds it soon after.
func NewHome(tb testing.TB, domain string) *Home {
	tb.Helper()
	dir := tb.TempDir()
	cert, err := rpc.LoadOrCreateCertificate(dir)
	if err != nil {
		tb.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer pc.Close()
	return &Home{Domain: domain, Dir: dir, Addr: pc.LocalAddr().String(), Cert: cert, Fingerprint: rpc.CertificateFingerprint(cert)}
}

// Peer is h as others configure it.
func (h *Home) Peer() federation.Peer {
	return federation.Peer{Domain: h.Domain, Addr: h.Addr, Fingerprint: h.Fingerprint}
}

// Peers lists homes as peers.
func Peers(homes ...*Home) []federation.Peer {
	var out []federation.Peer
	for _, h := range homes {
		out = append(out, h.Peer())
	}
	return out
}
