package server_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/quicproquo/qpq/internal/lan"
	"github.com/quicproquo/qpq/internal/lan/lantest"
	"github.com/quicproquo/qpq/node/server"
	"github.com/quicproquo/qpq/p2p"
	"github.com/quicproquo/qpq/p2p/mdns"
	"github.com/quicproquo/qpq/relay"
	"github.com/quicproquo/qpq/rpc"
)

func TestMain(m *testing.M) {
	switch lantest.Mode() {
	case "server":
		lantest.Serve(new(serverChild).handle)
	case "node":
		lantest.Serve(new(nodeChild).handle)
	}
	os.Exit(m.Run())
}

// The "server" child runs a whole home server (NodeService, libp2p with
// the relay service, mDNS) in its namespace.

type serverArgs struct {
	Addr   string `json:"addr"` // the namespace's IPv4 address
	Domain string `json:"domain"`
}

type serverReply struct {
	Listen      string          `json:"listen"`
	Fingerprint string          `json:"fingerprint"`
	AddrInfo    json.RawMessage `json:"addr_info"`
	MDNS        string          `json:"mdns"`
}

type serverChild struct {
	srv  *server.Server
	dir  string
	stop context.CancelFunc
	done chan error
}

func childLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (c *serverChild) handle(_ context.Context, op string, raw json.RawMessage) (any, error) {
	switch op {
	case "start":
		var a serverArgs
		if err := json.Unmarshal(raw, &a); err != nil {
			return nil, err
		}
		dir, err := os.MkdirTemp("", "qpq-server-")
		if err != nil {
			return nil, err
		}
		c.dir = dir
		s, err := server.Start(server.Config{
			Relay:  relay.Config{DataDir: dir, Domain: a.Domain},
			Listen: a.Addr + ":7443",
			P2P:    server.P2PConfig{Enable: true, Listen: []ma.Multiaddr{ma.StringCast("/ip4/" + a.Addr + "/udp/0/quic-v1")}},
			MDNS:   server.MDNSConfig{Enable: true, Interfaces: []string{lan.Iface}},
			Logger: childLogger(),
		})
		if err != nil {
			return nil, err
		}
		c.srv = s
		ctx, cancel := context.WithCancel(context.Background())
		c.stop, c.done = cancel, make(chan error, 1)
		go func() { c.done <- s.Run(ctx) }()
		in := s.Info()
		info, err := p2p.EncodeEndpoint(*in.P2P)
		if err != nil {
			return nil, err
		}
		return serverReply{Listen: in.Addr.String(), Fingerprint: in.Fingerprint.String(), AddrInfo: info, MDNS: in.MDNS}, nil
	case "close":
		if c.srv == nil {
			return nil, nil
		}
		c.stop()
		err := <-c.done
		c.srv = nil
		os.RemoveAll(c.dir)
		if err != nil {
			return nil, err
		}
		return nil, lantest.Leaks()
	}
	return nil, fmt.Errorf("unknown op %q", op)
}

// The "node" child is what a node does with a home server on its LAN:
// browse mDNS for it, call its NodeService at the announced address, and
// hold a relay reservation at its libp2p host.

type nodeArgs struct {
	Addr string `json:"addr"`
}

type mdnsEvent struct {
	Type   string `json:"type"` // "mdns"
	Peer   string `json:"peer"`
	Server string `json:"server"`
	Domain string `json:"domain"`
	Addrs  string `json:"addrs"`
}

type healthArgs struct {
	Server      string `json:"server"`
	Fingerprint string `json:"fingerprint"`
}

type nodeChild struct {
	addr string
	priv ed25519.PrivateKey
	disc *mdns.Discovery
	host *p2p.Host
	mu   sync.Mutex
}

func (n *nodeChild) handle(ctx context.Context, op string, raw json.RawMessage) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	switch op {
	case "browse":
		var a nodeArgs
		if err := json.Unmarshal(raw, &a); err != nil {
			return nil, err
		}
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		n.addr, n.priv = a.Addr, priv
		n.disc, err = mdns.Start(mdns.Config{
			Identity:   pub,
			Username:   "lan-node",
			Port:       4001, // only a record here; this node's host listens elsewhere
			Interfaces: []string{lan.Iface},
			Logger:     childLogger(),
			OnEvent: func(ev mdns.Event) {
				if ev.Kind == mdns.PeerLost {
					return
				}
				var addrs []string
				for _, a := range ev.Peer.Addrs {
					addrs = append(addrs, a.String())
				}
				lantest.Emit(mdnsEvent{Type: "mdns", Peer: ev.Peer.ID.String(), Server: ev.Peer.Server, Domain: ev.Peer.Domain, Addrs: strings.Join(addrs, " ")})
			},
		})
		return nil, err
	case "health":
		var a healthArgs
		if err := json.Unmarshal(raw, &a); err != nil {
			return nil, err
		}
		fp, err := rpc.ParseFingerprint(a.Fingerprint)
		if err != nil {
			return nil, err
		}
		conn, err := rpc.Dial(ctx, a.Server, rpc.DialOptions{Pin: fp})
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		return conn.Client().Health(ctx)
	case "reserve":
		var relayInfo peer.AddrInfo
		if err := json.Unmarshal(raw, &relayInfo); err != nil {
			return nil, err
		}
		h, err := p2p.New(p2p.Config{
			Identity:    n.priv,
			ListenAddrs: []ma.Multiaddr{ma.StringCast("/ip4/" + n.addr + "/udp/0/quic-v1")},
			Relays:      []peer.AddrInfo{relayInfo},
			Logger:      childLogger(),
		})
		if err != nil {
			return nil, err
		}
		n.host = h
		for {
			changed := h.AddrsChanged()
			info := h.AddrInfo()
			for _, a := range info.Addrs {
				if _, err := a.ValueForProtocol(ma.P_CIRCUIT); err == nil {
					b, err := p2p.EncodeEndpoint(info)
					return json.RawMessage(b), err
				}
			}
			select {
			case <-changed:
			case <-ctx.Done():
				return nil, errors.New("no relay reservation at the server")
			}
		}
	case "close":
		var errs []error
		if n.host != nil {
			errs = append(errs, n.host.Close())
			n.host = nil
		}
		if n.disc != nil {
			errs = append(errs, n.disc.Close())
			n.disc = nil
		}
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		return nil, lantest.Leaks()
	}
	return nil, fmt.Errorf("unknown op %q", op)
}

// TestLANServe runs `qpq serve`'s whole server in one namespace: a node on
// the LAN finds it by mDNS with server= and domain=, reaches NodeService
// at the announced address with the printed fingerprint, and holds a
// relay reservation at its libp2p host (found by the record's peer ID).
func TestLANServe(t *testing.T) {
	lantest.VerifyNoLeaks(t)
	l := lantest.New(t, 2)
	srvAddr, nodeAddr := l.Nodes[0].Addr.String(), l.Nodes[1].Addr.String()
	srv := lantest.Spawn(t, l, 0, "server")
	var sr serverReply
	srv.Call("start", serverArgs{Addr: srvAddr, Domain: "lan.test"}, &sr)
	if want := srvAddr + ":7443"; sr.MDNS != want || sr.Listen != want {
		t.Fatalf("listening on %s, announcing %s; want %s", sr.Listen, sr.MDNS, want)
	}
	var info peer.AddrInfo
	if err := json.Unmarshal(sr.AddrInfo, &info); err != nil {
		t.Fatal(err)
	}

	node := lantest.Spawn(t, l, 1, "node")
	node.Call("browse", nodeArgs{Addr: nodeAddr}, nil)
	ev := lantest.WaitEvent(node, 10*time.Second, func(ev mdnsEvent) bool {
		return ev.Type == "mdns" && ev.Peer == info.ID.String()
	})
	if ev.Server != sr.MDNS || ev.Domain != "lan.test" {
		t.Fatalf("record says server=%q domain=%q; want %q, lan.test", ev.Server, ev.Domain, sr.MDNS)
	}
	if !strings.Contains(ev.Addrs, "/ip4/"+srvAddr+"/udp/") {
		t.Errorf("record's addresses %q lack the server's libp2p address on the LAN", ev.Addrs)
	}

	var status string
	node.Call("health", healthArgs{Server: ev.Server, Fingerprint: sr.Fingerprint}, &status)
	if status != "ok" {
		t.Fatalf("health at the announced address: %q", status)
	}

	var withCircuit peer.AddrInfo
	node.Call("reserve", json.RawMessage(sr.AddrInfo), &withCircuit)
	circuit := "/p2p/" + info.ID.String() + "/p2p-circuit"
	found := false
	for _, a := range withCircuit.Addrs {
		found = found || strings.HasSuffix(a.String(), circuit)
	}
	if !found {
		t.Fatalf("the node's addresses %v hold no circuit through the server", withCircuit.Addrs)
	}
}
