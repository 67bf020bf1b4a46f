package server_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	"go.uber.org/goleak"

	"github.com/quicproquo/qpq/node/server"
	"github.com/quicproquo/qpq/p2p"
	"github.com/quicproquo/qpq/relay"
	"github.com/quicproquo/qpq/relay/store"
	"github.com/quicproquo/qpq/rpc"
)

func loopbackConfig(dir string) server.Config {
	return server.Config{
		Relay:  relay.Config{DataDir: dir, Domain: "loop.test"},
		Listen: "127.0.0.1:0",
		P2P:    server.P2PConfig{Enable: true, Listen: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/udp/0/quic-v1")}},
	}
}

// A server started and closed without Run frees everything; one that runs
// answers NodeService and stops when its context ends; a second server on
// the same data directory is refused while the first holds it.
func TestStartRunClose(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	s, err := server.Start(loopbackConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	s, err = server.Start(loopbackConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	in := s.Info()
	if in.P2P == nil || len(in.P2P.Addrs) == 0 || in.Domain != "loop.test" || in.MDNS != "" {
		t.Fatalf("info %+v", in)
	}
	if _, err := server.Start(loopbackConfig(dir)); err == nil {
		t.Fatal("a second server on the same data directory started")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	conn, err := rpc.Dial(ctx, in.Addr.String(), rpc.DialOptions{Pin: in.Fingerprint})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := conn.Client().Health(ctx); err != nil || st != "ok" {
		t.Fatalf("health %q, %v", st, err)
	}
	// serverInfo, without logging in: the domain, and the relay as the
	// server prints it.
	domain, rec, err := conn.Client().ServerInfo(ctx)
	if err != nil || domain != "loop.test" {
		t.Fatalf("serverInfo: %q, %v", domain, err)
	}
	relayInfo, err := p2p.DecodeEndpoint(rec, in.Identity)
	if err != nil || relayInfo.ID != in.P2P.ID || len(relayInfo.Addrs) != len(in.P2P.Addrs) || !relayInfo.Addrs[0].Equal(in.P2P.Addrs[0]) {
		t.Fatalf("serverInfo's relay %v (%v), want %v", relayInfo, err, in.P2P)
	}
	conn.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := s.Run(context.Background()); err == nil {
		t.Fatal("Run ran twice")
	}
}

func TestConfigErrors(t *testing.T) {
	defer goleak.VerifyNone(t)
	for name, mod := range map[string]func(*server.Config){
		"no data dir":      func(c *server.Config) { c.Relay.DataDir = "" },
		"mdns without p2p": func(c *server.Config) { c.P2P.Enable = false; c.MDNS.Enable = true },
		"bad domain":       func(c *server.Config) { c.Relay.Domain = "Not A Domain" },
		"bad listen":       func(c *server.Config) { c.Listen = "nowhere" },
	} {
		c := loopbackConfig(t.TempDir())
		mod(&c)
		if s, err := server.Start(c); err == nil {
			s.Close()
			t.Errorf("%s: started", name)
		}
	}
}

// Without P2P.Listen the libp2p host listens on the host of Listen, on
// DefaultP2PPort, so its AddrInfo survives restarts.
func TestDefaultP2PListen(t *testing.T) {
	defer goleak.VerifyNone(t)
	c := loopbackConfig(t.TempDir())
	c.P2P.Listen = nil
	l, err := net.ListenPacket("udp", "127.0.0.1:7444")
	if err != nil {
		t.Skipf("port 7444 is taken here: %v", err)
	}
	l.Close()
	s, err := server.Start(c)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := s.Info().P2P.Addrs
	if len(got) != 1 || got[0].String() != "/ip4/127.0.0.1/udp/7444/quic-v1" {
		t.Fatalf("default libp2p address %v, want /ip4/127.0.0.1/udp/7444/quic-v1", got)
	}
}

// A server stops even while a backup streams to a client that stopped
// reading: past Shutdown's grace the connection is closed, the read
// transaction ends and the store can close.
func TestStopDuringStalledBackup(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	cfg := loopbackConfig(dir)
	cfg.P2P = server.P2PConfig{}
	s, err := server.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Enough data that the backup fills the socket's buffers.
	var from, to store.Key
	from[0], to[0] = 1, 2
	payload := make([]byte, 32<<10)
	for range 256 {
		if _, err := s.Relay().Store().Enqueue(from, []store.Key{to}, store.ChannelID{}, payload); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	c, err := net.Dial("unix", s.Info().Admin)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET /v1/backup HTTP/1.1\r\nHost: admin\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 12)
	if _, err := io.ReadFull(c, head); err != nil || string(head) != "HTTP/1.1 200" {
		t.Fatalf("backup answered %q, %v", head, err)
	}
	// Read no more, and stop the server.
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the server did not stop while a backup was stalled")
	}
}
