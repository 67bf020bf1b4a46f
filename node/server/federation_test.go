package server_test

import (
	"context"
	"net"
	"testing"

	"go.uber.org/goleak"

	"github.com/quicproquo/qpq/node/server"
	"github.com/quicproquo/qpq/relay"
	"github.com/quicproquo/qpq/relay/federation"
	"github.com/quicproquo/qpq/rpc"
)

// Two servers configured as each other's peers federate with the
// certificate their clients pin: each reaches the other's federation
// listener and is recognized by its domain.
func TestFederationWiring(t *testing.T) {
	defer goleak.VerifyNone(t)
	type side struct {
		domain, dir, fed string
		fp               rpc.Fingerprint
		srv              *server.Server
	}
	mk := func(domain string) *side {
		dir := t.TempDir()
		cert, err := rpc.LoadOrCreateCertificate(dir)
		if err != nil {
			t.Fatal(err)
		}
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		return &side{domain: domain, dir: dir, fed: pc.LocalAddr().String(), fp: rpc.CertificateFingerprint(cert)}
	}
	a, b := mk("a.test"), mk("b.test")
	for _, p := range [][2]*side{{a, b}, {b, a}} {
		me, peer := p[0], p[1]
		s, err := server.Start(server.Config{
			Relay: relay.Config{DataDir: me.dir, Domain: me.domain, Federation: &federation.Config{
				Listen: me.fed,
				Peers:  []federation.Peer{{Domain: peer.domain, Addr: peer.fed, Fingerprint: peer.fp}},
			}},
			Listen: "127.0.0.1:0",
		})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if got := s.Info(); got.Federation == nil || got.Federation.String() != me.fed || got.Fingerprint != me.fp {
			t.Fatalf("%s: info %+v", me.domain, got)
		}
		me.srv = s
	}
	for _, p := range [][2]*side{{a, b}, {b, a}} {
		st, theirs, err := p[0].srv.Relay().Federation().Health(context.Background(), p[1].domain)
		if err != nil || st != "ok" || theirs != p[1].domain {
			t.Fatalf("%s → %s: %q %q %v", p[0].domain, p[1].domain, st, theirs, err)
		}
	}
}
