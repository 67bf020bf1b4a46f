package server_test

import (
	"context"
	"testing"

	"go.uber.org/goleak"

	"github.com/quicproquo/qpq/node/server"
	"github.com/quicproquo/qpq/relay"
	"github.com/quicproquo/qpq/relay/federation"
	"github.com/quicproquo/qpq/relay/federation/fedtest"
)

// Two servers configured as each other's peers federate with the
// certificate their clients pin: each reaches the other's federation
// listener and is recognized by its domain.
func TestFederationWiring(t *testing.T) {
	defer goleak.VerifyNone(t)
	a, b := fedtest.NewHome(t, "a.test"), fedtest.NewHome(t, "b.test")
	srv := map[*fedtest.Home]*server.Server{}
	for _, p := range [][2]*fedtest.Home{{a, b}, {b, a}} {
		me, peer := p[0], p[1]
		s, err := server.Start(server.Config{
			Relay: relay.Config{DataDir: me.Dir, Domain: me.Domain, Federation: &federation.Config{
				Listen: me.Addr,
				Peers:  fedtest.Peers(peer),
			}},
			Listen: "127.0.0.1:0",
		})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if got := s.Info(); got.Federation == nil || got.Federation.String() != me.Addr || got.Fingerprint != me.Fingerprint {
			t.Fatalf("%s: info %+v", me.Domain, got)
		}
		srv[me] = s
	}
	for _, p := range [][2]*fedtest.Home{{a, b}, {b, a}} {
		st, theirs, err := srv[p[0]].Relay().Federation().Health(context.Background(), p[1].Domain)
		if err != nil || st != "ok" || theirs != p[1].Domain {
			t.Fatalf("%s → %s: %q %q %v", p[0].Domain, p[1].Domain, st, theirs, err)
		}
	}
}
