package mdns

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"testing"

	"github.com/miekg/dns"
	"github.com/quicproquo/qpq/p2p"
)

func testSelf(t testing.TB, username string) self {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := p2p.PeerID(pub)
	if err != nil {
		t.Fatal(err)
	}
	return self{identity: pub, id: id, username: username, port: 4242}
}

// announcement packs what a node multicasts at start.
func announcement(t testing.TB, s self, ips ...net.IP) []byte {
	z, err := s.zone(ips)
	if err != nil {
		t.Fatal(err)
	}
	b, err := response(0, serviceRecords(z))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func parsePacket(b []byte) ([]Peer, []error) {
	var m dns.Msg
	if err := m.Unpack(b); err != nil {
		return nil, []error{err}
	}
	var peers []Peer
	var errs []error
	for _, e := range parseResponse(&m) {
		p, err := peerOf(e)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		peers = append(peers, p)
	}
	return peers, errs
}

func TestAnnouncementRoundTrip(t *testing.T) {
	for _, tc := range []struct{ name, user, server, domain string }{
		{"plain", "alice", "", ""},
		{"dots and spaces", "alice.b smith", "", ""},
		{"home server", "relay", "192.0.2.1:7000", "example.org"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := testSelf(t, tc.user)
			s.server, s.domain = tc.server, tc.domain
			peers, errs := parsePacket(announcement(t, s, net.IPv4(10, 77, 0, 1), net.IPv4(10, 77, 0, 9)))
			if len(errs) != 0 || len(peers) != 1 {
				t.Fatalf("parsed %d peers, errors %v", len(peers), errs)
			}
			p := peers[0]
			if p.ID != s.id || !bytes.Equal(p.Identity, s.identity) || p.Username != tc.user ||
				p.Server != tc.server || p.Domain != tc.domain {
				t.Errorf("peer %+v", p)
			}
			want := []string{"/ip4/10.77.0.1/udp/4242/quic-v1", "/ip4/10.77.0.9/udp/4242/quic-v1"}
			if len(p.Addrs) != 2 || p.Addrs[0].String() != want[0] || p.Addrs[1].String() != want[1] {
				t.Errorf("addrs %v, want %v", p.Addrs, want)
			}
		})
	}
}

// A record whose TXT id and peer disagree is dropped; so are other
// broken records.
func TestBadRecordsDropped(t *testing.T) {
	good := testSelf(t, "mallory")
	other := testSelf(t, "alice")
	for _, tc := range []struct {
		name string
		mod  func(*self, *[]string)
	}{
		{"id and peer disagree", func(s *self, txt *[]string) { (*txt)[3] = "peer=" + other.id.String() }},
		{"ver 2", func(s *self, txt *[]string) { (*txt)[0] = "ver=2" }},
		{"id not hex", func(s *self, txt *[]string) { (*txt)[1] = "id=zz" }},
		{"no user", func(s *self, txt *[]string) { (*txt)[2] = "user=" }},
		{"bad server", func(s *self, txt *[]string) { *txt = append(*txt, "server=nohostport", "domain=d") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			txt := s.txt()
			tc.mod(&s, &txt)
			z, err := s.zone([]net.IP{net.IPv4(10, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			z.TXT = txt
			b, err := response(0, serviceRecords(z))
			if err != nil {
				t.Fatal(err)
			}
			peers, errs := parsePacket(b)
			if len(peers) != 0 || len(errs) != 1 || !errors.Is(errs[0], ErrBadRecord) {
				t.Fatalf("peers %v, errors %v", peers, errs)
			}
		})
	}
}

func TestGoodbyeHasTTLZero(t *testing.T) {
	s := testSelf(t, "bob")
	z, err := s.zone([]net.IP{net.IPv4(10, 0, 0, 2)})
	if err != nil {
		t.Fatal(err)
	}
	b, err := response(0, goodbye(serviceRecords(z)))
	if err != nil {
		t.Fatal(err)
	}
	var m dns.Msg
	if err := m.Unpack(b); err != nil {
		t.Fatal(err)
	}
	es := parseResponse(&m)
	if len(es) != 1 || es[0].ttl != 0 {
		t.Fatalf("entries %+v", es)
	}
	if p, err := peerOf(es[0]); err != nil || p.ID != s.id {
		t.Fatalf("goodbye peer %v, %v", p.ID, err)
	}
	// The zone's own records keep their TTL.
	if serviceRecords(z)[0].Header().Ttl == 0 {
		t.Fatal("goodbye changed the zone's records")
	}
}

// FuzzParse feeds arbitrary packets to the parser: it must never panic,
// and what it accepts must be a consistent peer.
func FuzzParse(f *testing.F) {
	s := testSelf(f, "alice")
	f.Add(announcement(f, s, net.IPv4(10, 77, 0, 1)))
	s.server, s.domain = "192.0.2.1:7000", "example.org"
	f.Add(announcement(f, s, net.IPv4(10, 77, 0, 2), net.ParseIP("2001:db8::1")))
	z, _ := s.zone([]net.IP{net.IPv4(10, 0, 0, 3)})
	g, _ := response(0, goodbye(serviceRecords(z)))
	f.Add(g)
	q := new(dns.Msg)
	q.SetQuestion(serviceFQDN, dns.TypePTR)
	qb, _ := q.Pack()
	f.Add(qb)
	f.Add([]byte{0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		peers, _ := parsePacket(b)
		for _, p := range peers {
			want, err := p2p.PeerID(p.Identity)
			if err != nil || want != p.ID || p.Username == "" || len(p.Username) > MaxValue {
				t.Fatalf("accepted an inconsistent peer %+v", p)
			}
		}
	})
}
