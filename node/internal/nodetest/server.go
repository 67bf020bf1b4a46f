// Package nodetest has helpers for the node's tests: a real home server
// (relay) on loopback, started and stopped in-process.
package nodetest

import (
	"context"
	"testing"

	"github.com/quicproquo/qpq/relay"
	"github.com/quicproquo/qpq/rpc"
)

// Server is a home server on loopback: QUIC, Cap'n Proto RPC and bbolt in
// a temporary directory, rate limits off.
type Server struct {
	tb   testing.TB
	Dir  string
	Addr string
	FP   rpc.Fingerprint
	stop func()
}

// StartServer starts a home server that stops when tb ends.
func StartServer(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{tb: tb, Dir: tb.TempDir()}
	s.Start()
	tb.Cleanup(s.Stop)
	return s
}

// Start starts the server again after Stop, on the same address and data.
func (s *Server) Start() {
	s.tb.Helper()
	r, err := relay.Open(relay.Config{DataDir: s.Dir, Rates: relay.RateLimits{Off: true}})
	if err != nil {
		s.tb.Fatal(err)
	}
	cert, err := rpc.LoadOrCreateCertificate(s.Dir)
	if err != nil {
		r.Close()
		s.tb.Fatal(err)
	}
	addr := s.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := rpc.Listen(addr, cert, rpc.ListenOptions{})
	if err != nil {
		r.Close()
		s.tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, ln) }()
	s.Addr, s.FP = ln.Addr().String(), rpc.CertificateFingerprint(cert)
	s.stop = func() {
		cancel()
		if err := <-done; err != nil {
			s.tb.Errorf("home server: %v", err)
		}
		if err := r.Close(); err != nil {
			s.tb.Errorf("home server: %v", err)
		}
	}
}

// Stop stops the server; it is idempotent.
func (s *Server) Stop() {
	if s.stop != nil {
		s.stop()
		s.stop = nil
	}
}
