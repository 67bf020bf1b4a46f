package mdns

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	hmdns "github.com/hashicorp/mdns"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/miekg/dns"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/quicproquo/qpq/p2p"
	"golang.org/x/net/ipv4"
)

var groupAddr = &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353}

// Config configures Discovery. Identity, Username and Port are required;
// the zero value of any other field means its default.
type Config struct {
	// Identity is this node's Ed25519 identity key.
	Identity ed25519.PublicKey
	// Username is announced as the instance name and TXT user=.
	Username string
	// Port is the node's libp2p QUIC listen port (SRV port).
	Port int
	// Server ("host:port") and Domain are announced when the node serves
	// NodeService to clients over QUIC.
	Server, Domain string
	// Interfaces names the interfaces to run on (--mdns-iface). Empty
	// means every interface that is up, multicast-capable, not loopback,
	// with an IPv4 address.
	Interfaces []string
	// BrowseMin and BrowseMax bound the backoff between queries after the
	// immediate first one (defaults 1 s and 30 s).
	BrowseMin, BrowseMax time.Duration
	// ExpireAfter drops a peer not heard from for this long (default
	// 3×BrowseMax + 10 s: three missed answers).
	ExpireAfter time.Duration
	// MaxPeers bounds the peer table (default DefaultMaxPeers). Anyone
	// on the LAN can announce identities by the thousand, and each peer
	// found costs its user work (a link kept up, a name learned); a peer
	// first heard while the table is full is ignored until one expires.
	MaxPeers int
	// Announcements is the number of unsolicited announcements at start
	// and after an address change, 1 s apart (default 3).
	Announcements int
	// OnEvent, if set, receives every change of the peer table, in
	// order, from one goroutine. It must not block for long.
	OnEvent func(Event)
	// Logger; nil discards.
	Logger *slog.Logger
}

// EventKind says what happened to a peer.
type EventKind int

const (
	PeerFound   EventKind = iota // first seen
	PeerUpdated                  // addresses, name or server changed
	PeerLost                     // expired or said goodbye
)

func (k EventKind) String() string {
	return [...]string{"found", "updated", "lost"}[k]
}

// Event reports a change of the peer table.
type Event struct {
	Kind EventKind
	Peer Peer
}

// Discovery announces this node and keeps a table of peers on the local
// network. Close stops it.
type Discovery struct {
	cfg    Config
	self   self
	log    *slog.Logger
	listen *ipv4.PacketConn
	lconn  net.PacketConn
	pkts   chan packet
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	done   chan struct{} // closed when the loop has said goodbye

	// owned by the loop goroutine
	ifaces map[int]*iface // by index

	mu      sync.Mutex // guards peers and refused
	peers   map[peer.ID]*known
	refused bool // a peer was ignored since the table was last below MaxPeers
}

// DefaultMaxPeers is Config.MaxPeers by default: more nodes than a LAN of
// people has, few enough to keep a link to each.
const DefaultMaxPeers = 256

type iface struct {
	ifi   net.Interface
	ips   []net.IP
	conn  *net.UDPConn // query socket, bound to ips[0]
	zone  *hmdns.MDNSService
	joint bool // joined the group on this interface
}

type known struct {
	Peer
	seen map[string]seenOn // by interface name
}

type seenOn struct {
	addrs []ma.Multiaddr
	at    time.Time
}

type packet struct {
	data    []byte
	from    *net.UDPAddr
	ifIndex int // 0 when unknown (a query socket's: its own interface)
	via     *iface
}

// Start begins announcing and browsing on the configured interfaces.
func Start(cfg Config) (*Discovery, error) {
	if len(cfg.Identity) != ed25519.PublicKeySize {
		return nil, errors.New("mdns: Config.Identity must be a 32-byte Ed25519 key")
	}
	if cfg.Username == "" || len(cfg.Username) > MaxValue || len(cfg.Server) > MaxValue || len(cfg.Domain) > MaxValue {
		return nil, fmt.Errorf("mdns: Config.Username must be 1 to %d bytes, Server and Domain at most that", MaxValue)
	}
	if cfg.Server != "" {
		if _, _, err := net.SplitHostPort(cfg.Server); err != nil || cfg.Domain == "" {
			return nil, fmt.Errorf("mdns: Config.Server %q must be host:port, with a Domain", cfg.Server)
		}
	}
	if cfg.Port <= 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("mdns: Config.Port %d is not a port", cfg.Port)
	}
	id, err := p2p.PeerID(cfg.Identity)
	if err != nil {
		return nil, err
	}
	if cfg.BrowseMin <= 0 {
		cfg.BrowseMin = time.Second
	}
	if cfg.BrowseMax <= 0 {
		cfg.BrowseMax = 30 * time.Second
	}
	cfg.BrowseMax = max(cfg.BrowseMax, cfg.BrowseMin)
	if cfg.ExpireAfter <= 0 {
		cfg.ExpireAfter = 3*cfg.BrowseMax + 10*time.Second
	}
	if cfg.MaxPeers <= 0 {
		cfg.MaxPeers = DefaultMaxPeers
	}
	if cfg.Announcements <= 0 {
		cfg.Announcements = 3
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}

	// One listener for the group on every interface; SO_REUSEADDR (set
	// by Go for multicast addresses) lets other responders share 5353.
	lc, err := net.ListenPacket("udp4", groupAddr.String())
	if err != nil {
		return nil, fmt.Errorf("mdns: listening on %s: %w", groupAddr, err)
	}
	pc := ipv4.NewPacketConn(lc)
	if err := pc.SetControlMessage(ipv4.FlagInterface, true); err != nil {
		lc.Close()
		return nil, fmt.Errorf("mdns: IP_PKTINFO: %w", err)
	}
	pc.SetMulticastTTL(255) // RFC 6762 §11
	pc.SetMulticastLoopback(true)

	ctx, cancel := context.WithCancel(context.Background())
	d := &Discovery{
		cfg:    cfg,
		self:   self{identity: cfg.Identity, id: id, username: cfg.Username, server: cfg.Server, domain: cfg.Domain, port: cfg.Port},
		log:    log.With("component", "mdns"),
		listen: pc,
		lconn:  lc,
		pkts:   make(chan packet, 64),
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
		ifaces: make(map[int]*iface),
		peers:  make(map[peer.ID]*known),
	}
	if _, err := d.refreshIfaces(); err != nil {
		cancel()
		d.closeSockets()
		d.wg.Wait()
		return nil, err
	}
	d.wg.Add(2)
	go d.readListener()
	go d.loop()
	return d, nil
}

// Close says goodbye on every interface, stops, and waits for its
// goroutines. It is idempotent.
func (d *Discovery) Close() error {
	d.cancel()
	<-d.done
	d.closeSockets()
	d.wg.Wait()
	return nil
}

func (d *Discovery) closeSockets() {
	d.lconn.Close()
	for _, ifc := range d.ifaces {
		if ifc.conn != nil {
			ifc.conn.Close()
		}
	}
}

// Peers returns the peers in the table, sorted by username.
func (d *Discovery) Peers() []Peer {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Peer, 0, len(d.peers))
	for _, k := range d.peers {
		out = append(out, k.Peer)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Username < out[j].Username })
	return out
}

// wantedIfaces lists the interfaces to run on now.
func (d *Discovery) wantedIfaces() ([]net.Interface, error) {
	all, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("mdns: listing interfaces: %w", err)
	}
	if len(d.cfg.Interfaces) == 0 {
		var out []net.Interface
		for _, ifi := range all {
			if ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagMulticast != 0 && ifi.Flags&net.FlagLoopback == 0 {
				out = append(out, ifi)
			}
		}
		return out, nil
	}
	var out []net.Interface
	for _, name := range d.cfg.Interfaces {
		i := slices.IndexFunc(all, func(ifi net.Interface) bool { return ifi.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("mdns: no interface %q", name)
		}
		out = append(out, all[i])
	}
	return out, nil
}

func ipv4Addrs(ifi net.Interface) []net.IP {
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil
	}
	var out []net.IP
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			out = append(out, n.IP.To4())
		}
	}
	return out
}

// refreshIfaces brings the interface set and their addresses up to date:
// joins the group and opens a query socket on new ones, drops gone ones,
// rebuilds records where addresses changed. It returns the interfaces
// whose records changed (to announce on). Called by Start and then only
// by the loop.
func (d *Discovery) refreshIfaces() ([]*iface, error) {
	want, err := d.wantedIfaces()
	if err != nil {
		return nil, err
	}
	present := map[int]bool{}
	var changed []*iface
	var errs []error
	for _, ifi := range want {
		ips := ipv4Addrs(ifi)
		usable := ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagMulticast != 0 && len(ips) > 0
		if !usable {
			if len(d.cfg.Interfaces) > 0 && d.ifaces[ifi.Index] == nil {
				errs = append(errs, fmt.Errorf("mdns: interface %s is down, not multicast-capable or has no IPv4 address", ifi.Name))
			}
			continue
		}
		present[ifi.Index] = true
		ifc := d.ifaces[ifi.Index]
		if ifc != nil && sameIPs(ifc.ips, ips) {
			continue
		}
		if ifc == nil {
			ifc = &iface{ifi: ifi}
		} else if ifc.conn != nil {
			ifc.conn.Close() // rebound below to the new first address
			ifc.conn = nil
		}
		ifc.ips = ips
		if ifc.zone, err = d.self.zone(ips); err != nil {
			return nil, err
		}
		if !ifc.joint {
			if err := d.listen.JoinGroup(&ifi, &net.UDPAddr{IP: groupAddr.IP}); err != nil {
				errs = append(errs, fmt.Errorf("mdns: joining %s on %s: %w (a multicast route may be missing)", groupAddr.IP, ifi.Name, err))
				continue
			}
			ifc.joint = true
		}
		qc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ips[0]})
		if err != nil {
			errs = append(errs, fmt.Errorf("mdns: query socket on %s: %w", ifi.Name, err))
			continue
		}
		qp := ipv4.NewPacketConn(qc)
		qp.SetMulticastInterface(&ifi)
		qp.SetMulticastTTL(255)
		qp.SetMulticastLoopback(true)
		ifc.conn = qc
		d.ifaces[ifi.Index] = ifc
		changed = append(changed, ifc)
		d.wg.Add(1)
		go d.readQuerySocket(ifc, qc)
	}
	for idx, ifc := range d.ifaces {
		if !present[idx] {
			if ifc.joint {
				d.listen.LeaveGroup(&ifc.ifi, &net.UDPAddr{IP: groupAddr.IP})
			}
			if ifc.conn != nil {
				ifc.conn.Close()
			}
			delete(d.ifaces, idx)
		}
	}
	if len(d.ifaces) == 0 {
		errs = append(errs, errors.New("mdns: no usable interface"))
		return nil, errors.Join(errs...)
	}
	for _, err := range errs {
		d.log.Warn("interface skipped", "err", err)
	}
	return changed, nil
}

func (d *Discovery) readListener() {
	defer d.wg.Done()
	buf := make([]byte, MaxPacket)
	for {
		n, cm, from, err := d.listen.ReadFrom(buf)
		if err != nil {
			if d.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if cm == nil {
			continue
		}
		d.deliver(packet{data: append([]byte(nil), buf[:n]...), from: from.(*net.UDPAddr), ifIndex: cm.IfIndex})
	}
}

func (d *Discovery) readQuerySocket(ifc *iface, c *net.UDPConn) {
	defer d.wg.Done()
	buf := make([]byte, MaxPacket)
	for {
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || d.ctx.Err() != nil {
				return
			}
			continue
		}
		d.deliver(packet{data: append([]byte(nil), buf[:n]...), from: from, ifIndex: ifc.ifi.Index})
	}
}

// deliver hands a packet to the loop, dropping it when the loop is
// behind (mDNS tolerates loss; the next query repairs it).
func (d *Discovery) deliver(p packet) {
	select {
	case d.pkts <- p:
	default:
	}
}

func (d *Discovery) loop() {
	defer d.wg.Done()
	defer close(d.done)
	announceLeft := d.cfg.Announcements
	d.announceAll(nil)
	announceLeft--
	announceT := time.NewTimer(time.Second)
	defer announceT.Stop()
	d.queryAll()
	interval := d.cfg.BrowseMin
	browseT := time.NewTimer(interval)
	defer browseT.Stop()
	expireT := time.NewTicker(min(d.cfg.ExpireAfter/4, time.Second))
	defer expireT.Stop()
	for {
		select {
		case <-d.ctx.Done():
			d.sayGoodbye()
			return
		case p := <-d.pkts:
			d.handle(p)
		case <-announceT.C:
			if announceLeft > 0 {
				d.announceAll(nil)
				announceLeft--
				announceT.Reset(time.Second)
			}
		case <-browseT.C:
			changed, err := d.refreshIfaces()
			if err != nil {
				d.log.Warn("rescanning interfaces", "err", err)
			}
			if len(changed) > 0 {
				// New addresses: announce them like at start.
				d.announceAll(changed)
				announceLeft = d.cfg.Announcements - 1
				announceT.Reset(time.Second)
			}
			d.queryAll()
			interval = min(2*interval, d.cfg.BrowseMax)
			browseT.Reset(interval)
		case now := <-expireT.C:
			d.expire(now)
		}
	}
}

// announceAll multicasts this node's records on the given interfaces (all
// if nil).
func (d *Discovery) announceAll(only []*iface) {
	for _, ifc := range d.ifaces {
		if only != nil && !slices.Contains(only, ifc) {
			continue
		}
		d.multicast(ifc, serviceRecords(ifc.zone))
	}
}

func (d *Discovery) sayGoodbye() {
	for _, ifc := range d.ifaces {
		d.multicast(ifc, goodbye(serviceRecords(ifc.zone)))
	}
}

// multicast sends a response with rrs to the group on ifc, from its query
// socket (which is bound to ifc's address and routes there).
func (d *Discovery) multicast(ifc *iface, rrs []dns.RR) {
	if ifc.conn == nil {
		return
	}
	b, err := response(0, rrs)
	if err != nil {
		d.log.Error("packing announcement", "err", err)
		return
	}
	if _, err := ifc.conn.WriteToUDP(b, groupAddr); err != nil {
		d.log.Debug("announcing", "iface", ifc.ifi.Name, "err", err)
	}
}

func (d *Discovery) queryAll() {
	m := new(dns.Msg)
	m.SetQuestion(serviceFQDN, dns.TypePTR)
	m.RecursionDesired = false
	b, err := m.Pack()
	if err != nil {
		return
	}
	for _, ifc := range d.ifaces {
		if ifc.conn == nil {
			continue
		}
		if _, err := ifc.conn.WriteToUDP(b, groupAddr); err != nil {
			d.log.Debug("querying", "iface", ifc.ifi.Name, "err", err)
		}
	}
}

// handle answers a query or takes in a response.
func (d *Discovery) handle(p packet) {
	ifc := d.ifaces[p.ifIndex]
	if ifc == nil {
		return // an interface we do not run on
	}
	var m dns.Msg
	if err := m.Unpack(p.data); err != nil {
		return
	}
	// RFC 6762 §18: non-zero opcode or rcode must be ignored.
	if m.Opcode != dns.OpcodeQuery || m.Rcode != 0 {
		return
	}
	if !m.Response {
		d.answer(ifc, &m, p.from)
		return
	}
	now := time.Now()
	for _, e := range parseResponse(&m) {
		pr, err := peerOf(e)
		if err != nil {
			d.log.Debug("dropping record", "from", p.from, "instance", e.instance, "err", err)
			continue
		}
		if pr.ID == d.self.id {
			continue
		}
		if e.ttl == 0 {
			d.forget(pr.ID, ifc.ifi.Name)
			continue
		}
		d.saw(pr, ifc.ifi.Name, now)
	}
}

// answer responds to a query with ifc's records: by unicast to a legacy
// querier (source port not 5353) or when unicast is asked (QU), else by
// multicast on ifc.
func (d *Discovery) answer(ifc *iface, q *dns.Msg, from *net.UDPAddr) {
	var rrs []dns.RR
	unicast := from.Port != groupAddr.Port
	for _, qu := range q.Question {
		if qu.Qclass&(1<<15) != 0 {
			unicast = true
		}
		if strings.EqualFold(qu.Name, serviceFQDN) {
			qu.Name = serviceFQDN
		}
		rrs = append(rrs, ifc.zone.Records(qu)...)
	}
	if len(rrs) == 0 {
		return
	}
	id := uint16(0)
	if from.Port != groupAddr.Port {
		id = q.Id // legacy unicast echoes the id (RFC 6762 §6.7)
	}
	b, err := response(id, rrs)
	if err != nil {
		return
	}
	if unicast {
		d.listen.WriteTo(b, nil, from)
		return
	}
	d.listen.WriteTo(b, &ipv4.ControlMessage{IfIndex: ifc.ifi.Index}, groupAddr)
}

// saw records that pr was heard on ifName.
func (d *Discovery) saw(pr Peer, ifName string, now time.Time) {
	d.mu.Lock()
	k, ok := d.peers[pr.ID]
	if !ok && len(d.peers) >= d.cfg.MaxPeers {
		tell := !d.refused
		d.refused = true
		d.mu.Unlock()
		if tell {
			d.log.Warn("mdns: peer table full; ignoring new peers until some expire", "max", d.cfg.MaxPeers)
		}
		return
	}
	if !ok {
		k = &known{seen: map[string]seenOn{}}
		d.peers[pr.ID] = k
	}
	before := k.Peer
	k.seen[ifName] = seenOn{addrs: pr.Addrs, at: now}
	pr.Addrs = k.mergedAddrs()
	pr.LastSeen = now
	k.Peer = pr
	d.mu.Unlock()
	switch {
	case !ok:
		d.emit(PeerFound, pr)
	case !samePeer(before, pr):
		d.emit(PeerUpdated, pr)
	}
}

func (k *known) mergedAddrs() []ma.Multiaddr {
	names := make([]string, 0, len(k.seen))
	for n := range k.seen {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []ma.Multiaddr
	for _, n := range names {
		for _, a := range k.seen[n].addrs {
			if !slices.ContainsFunc(out, a.Equal) {
				out = append(out, a)
			}
		}
	}
	return out
}

func samePeer(a, b Peer) bool {
	return a.Username == b.Username && a.Server == b.Server && a.Domain == b.Domain &&
		slices.EqualFunc(a.Addrs, b.Addrs, func(x, y ma.Multiaddr) bool { return x.Equal(y) })
}

// forget drops what ifName said about id (a goodbye).
func (d *Discovery) forget(id peer.ID, ifName string) {
	d.mu.Lock()
	k, ok := d.peers[id]
	if !ok {
		d.mu.Unlock()
		return
	}
	delete(k.seen, ifName)
	d.mu.Unlock()
	d.settle(id, k)
}

// expire drops interfaces a peer has been silent on for ExpireAfter.
func (d *Discovery) expire(now time.Time) {
	d.mu.Lock()
	var touched []peer.ID
	for id, k := range d.peers {
		for n, s := range k.seen {
			if now.Sub(s.at) > d.cfg.ExpireAfter {
				delete(k.seen, n)
				touched = append(touched, id)
			}
		}
	}
	d.mu.Unlock()
	for _, id := range touched {
		d.mu.Lock()
		k := d.peers[id]
		d.mu.Unlock()
		if k != nil {
			d.settle(id, k)
		}
	}
}

// settle reports a peer lost when no interface sees it any more, or
// updated when it lost some addresses.
func (d *Discovery) settle(id peer.ID, k *known) {
	d.mu.Lock()
	if d.peers[id] != k {
		d.mu.Unlock()
		return
	}
	before := k.Peer
	if len(k.seen) == 0 {
		delete(d.peers, id)
		d.refused = false
		d.mu.Unlock()
		d.emit(PeerLost, before)
		return
	}
	k.Addrs = k.mergedAddrs()
	k.LastSeen = time.Time{}
	for _, s := range k.seen {
		if s.at.After(k.LastSeen) {
			k.LastSeen = s.at
		}
	}
	after := k.Peer
	d.mu.Unlock()
	if !samePeer(before, after) {
		d.emit(PeerUpdated, after)
	}
}

func (d *Discovery) emit(kind EventKind, p Peer) {
	d.log.Debug("peer", "event", kind, "user", p.Username, "peer", p.ID.ShortString(), "addrs", p.Addrs)
	if d.cfg.OnEvent != nil {
		d.cfg.OnEvent(Event{Kind: kind, Peer: p})
	}
}
