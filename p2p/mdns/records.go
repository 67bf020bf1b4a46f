package mdns

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	hmdns "github.com/hashicorp/mdns"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/miekg/dns"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/quicproquo/qpq/p2p"
)

// Names and limits of the records.
const (
	// Service is the DNS-SD service type of quicproquo nodes.
	Service = "_quicproquo._udp"
	// TXTVersion is the ver= of the records this package writes and reads.
	TXTVersion = "1"

	domain      = "local."
	serviceFQDN = Service + "." + domain

	// MaxPacket bounds an mDNS packet read or sent (RFC 6762 §17).
	MaxPacket = 9000
	// MaxValue bounds a TXT value (user, server, domain): a TXT string
	// holds 255 bytes including "key=".
	MaxValue = 240
	// maxInstances bounds the instances taken from one packet, and
	// maxHostAddrs the addresses per host.
	maxInstances = 16
	maxHostAddrs = 16
)

// ErrBadRecord reports a record that is not a valid quicproquo node.
var ErrBadRecord = errors.New("mdns: bad record")

// Peer is a node found on the local network.
type Peer struct {
	ID       peer.ID
	Identity ed25519.PublicKey
	Username string
	// Addrs are its QUIC addresses, /ip4/<A>/udp/<port>/quic-v1, on
	// every interface it was seen on.
	Addrs []ma.Multiaddr
	// Server and Domain are set when the node serves NodeService to
	// clients over QUIC (a home server).
	Server, Domain string
	// LastSeen is when a record of it last arrived, on any interface.
	LastSeen time.Time
}

// AddrInfo returns the peer's libp2p address info, for p2p.Host.AddPeer.
func (p Peer) AddrInfo() peer.AddrInfo { return peer.AddrInfo{ID: p.ID, Addrs: p.Addrs} }

// self is what this node announces.
type self struct {
	identity ed25519.PublicKey
	id       peer.ID
	username string
	server   string
	domain   string
	port     int
}

func (s self) txt() []string {
	t := []string{
		"ver=" + TXTVersion,
		"id=" + hex.EncodeToString(s.identity),
		"user=" + s.username,
		"peer=" + s.id.String(),
	}
	if s.server != "" {
		t = append(t, "server="+s.server, "domain="+s.domain)
	}
	return t
}

// hostName is this node's mDNS host name: unique per identity, a valid
// label whatever the username is.
func (s self) hostName() string {
	return "qpq-" + hex.EncodeToString(s.identity[:8]) + "." + domain
}

// escapeLabel makes a username one DNS label in miekg/dns presentation
// form (a '.' would otherwise split it).
func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `.`, `\.`).Replace(s)
}

// zone returns the records of this node on an interface with the given
// addresses, built by hashicorp/mdns.
func (s self) zone(ips []net.IP) (*hmdns.MDNSService, error) {
	z, err := hmdns.NewMDNSService(escapeLabel(s.username), Service, domain, s.hostName(), s.port, ips, s.txt())
	if err != nil {
		return nil, fmt.Errorf("mdns: building records: %w", err)
	}
	return z, nil
}

// serviceRecords returns the records an announcement carries: PTR, SRV,
// A/AAAA and TXT.
func serviceRecords(z *hmdns.MDNSService) []dns.RR {
	return z.Records(dns.Question{Name: serviceFQDN, Qtype: dns.TypePTR, Qclass: dns.ClassINET})
}

// entry is what one response says about one service instance.
type entry struct {
	instance string
	ttl      uint32 // of the PTR, else the SRV; 0 is a goodbye
	port     int
	txt      []string
	ips      []net.IP
}

// parseResponse collects the quicproquo instances a response describes,
// from its answer and additional sections.
func parseResponse(m *dns.Msg) []entry {
	type srv struct {
		target string
		port   uint16
		ttl    uint32
	}
	ptrTTL := map[string]uint32{}
	var order []string
	srvs := map[string]srv{}
	txts := map[string][]string{}
	hosts := map[string][]net.IP{}
	suffix := "." + serviceFQDN
	for _, rr := range append(append([]dns.RR(nil), m.Answer...), m.Extra...) {
		h := rr.Header()
		name := strings.ToLower(h.Name)
		switch r := rr.(type) {
		case *dns.PTR:
			inst := strings.ToLower(r.Ptr)
			if name != serviceFQDN || !strings.HasSuffix(inst, suffix) {
				continue
			}
			if _, seen := ptrTTL[inst]; !seen {
				order = append(order, inst)
			}
			ptrTTL[inst] = h.Ttl
		case *dns.SRV:
			if strings.HasSuffix(name, suffix) {
				srvs[name] = srv{strings.ToLower(r.Target), r.Port, h.Ttl}
			}
		case *dns.TXT:
			if strings.HasSuffix(name, suffix) {
				txts[name] = r.Txt
			}
		case *dns.A:
			if len(hosts[name]) < maxHostAddrs {
				hosts[name] = append(hosts[name], r.A)
			}
		case *dns.AAAA:
			if len(hosts[name]) < maxHostAddrs {
				hosts[name] = append(hosts[name], r.AAAA)
			}
		}
	}
	// Instances answered without a PTR (a query for the instance itself)
	// count too.
	for name := range srvs {
		if _, ok := ptrTTL[name]; !ok {
			order = append(order, name)
		}
	}
	var out []entry
	for _, inst := range order {
		s, ok := srvs[inst]
		txt, hasTXT := txts[inst]
		if !ok || !hasTXT {
			continue
		}
		ttl, ok := ptrTTL[inst]
		if !ok {
			ttl = s.ttl
		}
		out = append(out, entry{instance: inst, ttl: ttl, port: int(s.port), txt: txt, ips: hosts[s.target]})
		if len(out) == maxInstances {
			break
		}
	}
	return out
}

// peerOf checks an entry's TXT and turns it into a Peer. A goodbye
// (ttl 0) needs no addresses.
func peerOf(e entry) (Peer, error) {
	kv := map[string]string{}
	for _, s := range e.txt {
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			continue // a boolean attribute; none is ours
		}
		if _, dup := kv[k]; !dup { // RFC 6763 §6.4: the first one counts
			kv[k] = v
		}
	}
	if kv["ver"] != TXTVersion {
		return Peer{}, fmt.Errorf("%w: ver=%q", ErrBadRecord, kv["ver"])
	}
	key, err := hex.DecodeString(kv["id"])
	if err != nil || len(key) != ed25519.PublicKeySize {
		return Peer{}, fmt.Errorf("%w: id is not a hex Ed25519 key", ErrBadRecord)
	}
	id, err := peer.Decode(kv["peer"])
	if err != nil {
		return Peer{}, fmt.Errorf("%w: peer: %v", ErrBadRecord, err)
	}
	if want, err := p2p.PeerID(key); err != nil || want != id {
		return Peer{}, fmt.Errorf("%w: TXT id and peer disagree", ErrBadRecord)
	}
	p := Peer{ID: id, Identity: key, Username: kv["user"], Server: kv["server"], Domain: kv["domain"]}
	if p.Username == "" || len(p.Username) > MaxValue || len(p.Server) > MaxValue || len(p.Domain) > MaxValue {
		return Peer{}, fmt.Errorf("%w: user, server or domain empty or too long", ErrBadRecord)
	}
	if p.Server != "" {
		if _, port, err := net.SplitHostPort(p.Server); err != nil || port == "" {
			return Peer{}, fmt.Errorf("%w: server=%q is not host:port", ErrBadRecord, p.Server)
		}
	}
	if e.ttl == 0 {
		return p, nil
	}
	if e.port <= 0 || e.port > 65535 {
		return Peer{}, fmt.Errorf("%w: port %d", ErrBadRecord, e.port)
	}
	port := strconv.Itoa(e.port)
	for _, ip := range e.ips {
		var a ma.Multiaddr
		switch {
		case ip.To4() != nil:
			a, err = ma.NewMultiaddr("/ip4/" + ip.To4().String() + "/udp/" + port + "/quic-v1")
		case ip.IsGlobalUnicast() || ip.IsPrivate():
			a, err = ma.NewMultiaddr("/ip6/" + ip.String() + "/udp/" + port + "/quic-v1")
		default:
			continue // link-local would need a zone; multicast/unspecified are junk
		}
		if err == nil && !ip.IsUnspecified() && !ip.IsMulticast() {
			p.Addrs = append(p.Addrs, a)
		}
	}
	if len(p.Addrs) == 0 {
		return Peer{}, fmt.Errorf("%w: no usable address", ErrBadRecord)
	}
	return p, nil
}

// goodbye returns copies of rrs with TTL 0 (RFC 6762 §10.1).
func goodbye(rrs []dns.RR) []dns.RR {
	out := make([]dns.RR, len(rrs))
	for i, rr := range rrs {
		out[i] = dns.Copy(rr)
		out[i].Header().Ttl = 0
	}
	return out
}

// response packs an unsolicited or multicast response carrying rrs.
func response(id uint16, rrs []dns.RR) ([]byte, error) {
	m := &dns.Msg{
		MsgHdr: dns.MsgHdr{Id: id, Response: true, Authoritative: true},
		Answer: rrs,
	}
	m.Compress = true
	return m.Pack()
}

func sameIPs(a, b []net.IP) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}
