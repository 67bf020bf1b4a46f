package p2p_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/quicproquo/qpq/internal/lan"
	"github.com/quicproquo/qpq/internal/lan/lantest"
	"github.com/quicproquo/qpq/p2p"
	"github.com/quicproquo/qpq/p2p/mdns"
	"github.com/quicproquo/qpq/p2p/peersvc"
	"github.com/quicproquo/qpq/schema"
	bolt "go.etcd.io/bbolt"
)

func TestMain(m *testing.M) {
	if lantest.Mode() != "" {
		lantest.Serve(newNodeChild().handle)
	}
	os.Exit(m.Run())
}

// The "node" child: a quicproquo node's P2P side (host, peer service on
// bbolt, optionally mDNS) in a namespace, driven by the test.

type linkConfig struct {
	HeartbeatMS   int `json:"heartbeat_ms"`
	DeadMS        int `json:"dead_ms"`
	DialMS        int `json:"dial_ms"`
	RedialMaxMS   int `json:"redial_max_ms"`
	DirectMinMS   int `json:"direct_min_ms"`
	DirectMaxMS   int `json:"direct_max_ms"`
	RelayConnSecs int `json:"relay_conn_secs"`
}

// fastLinks notices a dead path within ~1.3 s and redials within ~1 s:
// short enough for tests, still several round trips long.
var fastLinks = linkConfig{HeartbeatMS: 300, DeadMS: 1000, DialMS: 2000, RedialMaxMS: 1000, DirectMinMS: 500, DirectMaxMS: 1000}

type startArgs struct {
	Username     string            `json:"username"`
	Listen       string            `json:"listen"` // IPv4 address
	Relays       []json.RawMessage `json:"relays,omitempty"`
	RelayService bool              `json:"relay_service,omitempty"`
	Link         linkConfig        `json:"link"`
	MDNS         bool              `json:"mdns,omitempty"` // discover peers and keep links to them
	KeyPackages  []string          `json:"key_packages,omitempty"`
}

type startReply struct {
	Peer     string          `json:"peer"`
	Identity string          `json:"identity"`
	AddrInfo json.RawMessage `json:"addr_info"`
}

type linkEvent struct {
	Type  string `json:"type"` // "link"
	Peer  string `json:"peer"`
	State string `json:"state"`
	Addr  string `json:"addr"`
}

type deliveryEvent struct {
	Type    string `json:"type"` // "delivery"
	Seq     uint64 `json:"seq"`
	Sender  string `json:"sender"`
	Payload string `json:"payload"`
}

type peerArgs struct {
	Peer    string `json:"peer"`
	Payload string `json:"payload,omitempty"`
	AtNS    int64  `json:"at_ns,omitempty"`
	N       int    `json:"n,omitempty"`
	UDPAddr string `json:"udp_addr,omitempty"`
}

type channelReply struct {
	ID     string `json:"id"`
	WasNew bool   `json:"was_new"`
}

type benchReply struct {
	UDP    []time.Duration `json:"udp"`
	Stream []time.Duration `json:"stream"`
	RPC    []time.Duration `json:"rpc"`
}

// streamEchoProtocol is a bare libp2p stream echo beside /quicproquo/p2p/1
// on the benchmark's nodes: the transport's own round trip, without RPC.
const streamEchoProtocol = "/quicproquo/bench-echo/1"

const echoPort = 9000

type nodeChild struct {
	host  *p2p.Host
	db    *bolt.DB
	dir   string
	store *peersvc.Store
	svc   *peersvc.Service
	disc  *mdns.Discovery
	echo  *net.UDPConn
	stop  context.CancelFunc
	wg    sync.WaitGroup
}

func newNodeChild() *nodeChild { return &nodeChild{} }

func (n *nodeChild) handle(ctx context.Context, op string, raw json.RawMessage) (any, error) {
	switch op {
	case "start":
		var a startArgs
		if err := json.Unmarshal(raw, &a); err != nil {
			return nil, err
		}
		return n.start(a)
	case "close":
		return nil, n.close()
	}
	if n.host == nil && op != "udp_echo" {
		return nil, errors.New("not started")
	}
	var a peerArgs
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &a); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	switch op {
	case "addr_info":
		return rawJSON(n.host.AddrInfo())
	case "wait_circuit":
		for {
			changed := n.host.AddrsChanged()
			info := n.host.AddrInfo()
			for _, a := range info.Addrs {
				if _, err := a.ValueForProtocol(ma.P_CIRCUIT); err == nil {
					return rawJSON(info)
				}
			}
			select {
			case <-changed:
			case <-ctx.Done():
				return nil, errors.New("no relay reservation")
			}
		}
	case "add_peer":
		var info peer.AddrInfo
		if err := json.Unmarshal(raw, &info); err != nil {
			return nil, err
		}
		n.host.AddPeer(info)
		return nil, nil
	case "fetch_kp":
		return n.fetchKeyPackage(ctx, a.Peer)
	case "enqueue":
		return n.enqueue(ctx, a.Peer, a.Payload)
	case "open_channel":
		return n.openChannel(ctx, a)
	case "forget_channel":
		key, err := keyOf(a.Peer)
		if err != nil {
			return nil, err
		}
		return nil, n.store.ForgetChannel(key)
	case "udp_echo":
		return nil, n.udpEcho(a.UDPAddr)
	case "bench":
		return n.bench(ctx, a)
	}
	return nil, fmt.Errorf("unknown op %q", op)
}

func rawJSON(v any) (json.RawMessage, error) { return json.Marshal(v) }

func keyOf(id string) (ed25519.PublicKey, error) {
	pid, err := peer.Decode(id)
	if err != nil {
		return nil, err
	}
	return p2p.IdentityKey(pid)
}

func ms(v int) time.Duration { return time.Duration(v) * time.Millisecond }

func (n *nodeChild) start(a startArgs) (any, error) {
	if n.host != nil {
		return nil, errors.New("already started")
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", a.Username)
	if n.dir, err = os.MkdirTemp("", "qpq-node-"); err != nil {
		return nil, err
	}
	if n.db, err = bolt.Open(filepath.Join(n.dir, "node.db"), 0o600, nil); err != nil {
		return nil, err
	}
	if n.store, err = peersvc.NewStore(n.db); err != nil {
		return nil, err
	}
	if n.svc, err = peersvc.New(n.store, peersvc.Config{Identity: pub, Username: a.Username, Logger: log}); err != nil {
		return nil, err
	}
	for _, kp := range a.KeyPackages {
		if err := n.store.AddKeyPackages([]byte(kp)); err != nil {
			return nil, err
		}
	}
	var relays []peer.AddrInfo
	for _, r := range a.Relays {
		var info peer.AddrInfo
		if err := json.Unmarshal(r, &info); err != nil {
			return nil, err
		}
		relays = append(relays, info)
	}
	cfg := p2p.Config{
		Identity:    priv,
		ListenAddrs: []ma.Multiaddr{ma.StringCast("/ip4/" + a.Listen + "/udp/0/quic-v1")},
		Service:     n.svc.Client,
		Relays:      relays,
		Link: p2p.LinkConfig{
			Heartbeat: ms(a.Link.HeartbeatMS), DeadAfter: ms(a.Link.DeadMS), DialTimeout: ms(a.Link.DialMS),
			RedialMax: ms(a.Link.RedialMaxMS), DirectRetryMin: ms(a.Link.DirectMinMS), DirectRetryMax: ms(a.Link.DirectMaxMS),
		},
		RelayService: p2p.RelayServiceConfig{Enable: a.RelayService, ConnDuration: time.Duration(a.Link.RelayConnSecs) * time.Second},
		OnLink: func(ev p2p.LinkEvent) {
			le := linkEvent{Type: "link", Peer: ev.Peer.String(), State: ev.State.String()}
			if ev.Addr != nil {
				le.Addr = ev.Addr.String()
			}
			lantest.Emit(le)
		},
		Logger: log,
	}
	if n.host, err = p2p.New(cfg); err != nil {
		return nil, err
	}
	n.host.Libp2p().SetStreamHandler(streamEchoProtocol, func(s network.Stream) {
		defer s.Close()
		io.Copy(s, s)
	})
	ctx, cancel := context.WithCancel(context.Background())
	n.stop = cancel
	n.wg.Add(1)
	go n.reportInbox(ctx)

	if a.MDNS {
		port, err := listenPort(n.host.AddrInfo())
		if err != nil {
			return nil, err
		}
		n.disc, err = mdns.Start(mdns.Config{
			Identity:   pub,
			Username:   a.Username,
			Port:       port,
			Interfaces: []string{lan.Iface},
			Logger:     log,
			OnEvent: func(ev mdns.Event) {
				if ev.Kind != mdns.PeerLost {
					n.host.AddPeer(ev.Peer.AddrInfo())
				}
			},
		})
		if err != nil {
			return nil, err
		}
	}
	info, err := json.Marshal(n.host.AddrInfo())
	if err != nil {
		return nil, err
	}
	return startReply{Peer: n.host.ID().String(), Identity: hex.EncodeToString(pub), AddrInfo: info}, nil
}

func listenPort(info peer.AddrInfo) (int, error) {
	for _, a := range info.Addrs {
		if v, err := a.ValueForProtocol(ma.P_UDP); err == nil {
			return strconv.Atoi(v)
		}
	}
	return 0, errors.New("no UDP listen address")
}

// reportInbox emits every delivery and acknowledges it, as the messenger
// will.
func (n *nodeChild) reportInbox(ctx context.Context) {
	defer n.wg.Done()
	for {
		changed := n.store.InboxChanged()
		ds, err := n.store.Peek(0)
		if err != nil {
			fmt.Fprintln(os.Stderr, "peek:", err)
			return
		}
		for _, d := range ds {
			lantest.Emit(deliveryEvent{Type: "delivery", Seq: d.Seq, Sender: hex.EncodeToString(d.Sender), Payload: string(d.Payload)})
			if err := n.store.Ack(d.Seq); err != nil {
				fmt.Fprintln(os.Stderr, "ack:", err)
				return
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

func (n *nodeChild) nodeService(ctx context.Context, id string) (schema.NodeService, ed25519.PublicKey, error) {
	pid, err := peer.Decode(id)
	if err != nil {
		return schema.NodeService{}, nil, err
	}
	key, err := p2p.IdentityKey(pid)
	if err != nil {
		return schema.NodeService{}, nil, err
	}
	ns, err := n.host.NodeService(ctx, pid)
	return ns, key, err
}

func (n *nodeChild) fetchKeyPackage(ctx context.Context, id string) (any, error) {
	ns, key, err := n.nodeService(ctx, id)
	if err != nil {
		return nil, err
	}
	defer ns.Release()
	f, rel := ns.FetchKeyPackage(ctx, func(p schema.NodeService_fetchKeyPackage_Params) error {
		return p.SetIdentityKey(key)
	})
	defer rel()
	res, err := f.Struct()
	if err != nil {
		return nil, err
	}
	kp, err := res.Package()
	return string(kp), err
}

func (n *nodeChild) enqueue(ctx context.Context, id, payload string) (any, error) {
	ns, key, err := n.nodeService(ctx, id)
	if err != nil {
		return nil, err
	}
	defer ns.Release()
	f, rel := ns.Enqueue(ctx, func(p schema.NodeService_enqueue_Params) error {
		p.SetVersion(1)
		if err := p.SetPayload([]byte(payload)); err != nil {
			return err
		}
		return p.SetRecipientKey(key)
	})
	defer rel()
	res, err := f.Struct()
	if err != nil {
		return nil, err
	}
	return res.Seq(), nil
}

func (n *nodeChild) openChannel(ctx context.Context, a peerArgs) (any, error) {
	ns, key, err := n.nodeService(ctx, a.Peer)
	if err != nil {
		return nil, err
	}
	defer ns.Release()
	time.Sleep(time.Until(time.Unix(0, a.AtNS)))
	ch, wasNew, err := n.svc.OpenChannel(ctx, key, ns)
	if err != nil {
		return nil, err
	}
	return channelReply{ID: hex.EncodeToString(ch.ID[:]), WasNew: wasNew}, nil
}

func (n *nodeChild) udpEcho(addr string) error {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(addr), Port: echoPort})
	if err != nil {
		return err
	}
	n.echo = c
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		buf := make([]byte, 2048)
		for {
			k, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			c.WriteToUDP(buf[:k], from)
		}
	}()
	return nil
}

// bench measures a.N round trips of each kind, interleaved so that both
// see the same conditions: a bare UDP ping-pong with the peer's echo
// server, and a NodeService call (health) over the P2P link.
func (n *nodeChild) bench(ctx context.Context, a peerArgs) (any, error) {
	ns, _, err := n.nodeService(ctx, a.Peer)
	if err != nil {
		return nil, err
	}
	defer ns.Release()
	uc, err := net.Dial("udp4", net.JoinHostPort(a.UDPAddr, strconv.Itoa(echoPort)))
	if err != nil {
		return nil, err
	}
	defer uc.Close()
	ping := make([]byte, 64)
	pong := make([]byte, 2048)
	udp := func() (time.Duration, error) {
		uc.SetDeadline(time.Now().Add(2 * time.Second))
		t0 := time.Now()
		if _, err := uc.Write(ping); err != nil {
			return 0, err
		}
		if _, err := uc.Read(pong); err != nil {
			return 0, err
		}
		return time.Since(t0), nil
	}
	pid, err := peer.Decode(a.Peer)
	if err != nil {
		return nil, err
	}
	es, err := n.host.Libp2p().NewStream(ctx, pid, streamEchoProtocol)
	if err != nil {
		return nil, err
	}
	defer es.Reset()
	stream := func() (time.Duration, error) {
		t0 := time.Now()
		if _, err := es.Write(ping); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(es, pong[:len(ping)]); err != nil {
			return 0, err
		}
		return time.Since(t0), nil
	}
	rpc := func() (time.Duration, error) {
		t0 := time.Now()
		f, rel := ns.Health(ctx, nil)
		res, err := f.Struct()
		if err == nil {
			_, err = res.Status()
		}
		rel()
		return time.Since(t0), err
	}
	var r benchReply
	for i := range a.N + 50 {
		u, err := udp()
		if err != nil {
			return nil, err
		}
		e, err := stream()
		if err != nil {
			return nil, err
		}
		p, err := rpc()
		if err != nil {
			return nil, err
		}
		if i >= 50 { // warm-up
			r.UDP, r.Stream, r.RPC = append(r.UDP, u), append(r.Stream, e), append(r.RPC, p)
		}
	}
	return r, nil
}

func (n *nodeChild) close() error {
	if n.disc != nil {
		n.disc.Close()
	}
	if n.stop != nil {
		n.stop()
	}
	if n.echo != nil {
		n.echo.Close()
	}
	if n.host != nil {
		n.host.Close()
	}
	n.wg.Wait()
	if n.db != nil {
		n.db.Close()
		os.RemoveAll(n.dir)
	}
	n.host, n.disc, n.echo, n.db, n.stop = nil, nil, nil, nil, nil
	return lantest.Leaks()
}
