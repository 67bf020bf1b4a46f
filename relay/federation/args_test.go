package federation

import (
	"bytes"
	"crypto/tls"
	"errors"
	"strings"
	"testing"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/rpc"
	"github.com/quicproquo/qpq/rpc/errcode"
	"github.com/quicproquo/qpq/schema/fedschema"
)

var testLimits = limits{maxHops: 4, maxPayload: 64, maxBatch: 3}

// relayMsg is a relayEnqueue (or, with several recipients,
// relayBatchEnqueue) parameter message as a peer sends it.
type relayMsg struct {
	origin  string
	hops    uint8
	stream  []byte
	seq     uint64
	from    []byte
	to      [][]byte
	payload []byte
	channel []byte
}

func validRelay() relayMsg {
	k := bytes.Repeat([]byte{7}, 32)
	return relayMsg{origin: "a.test", hops: 1, stream: make([]byte, 16), seq: 1, from: k, to: [][]byte{bytes.Repeat([]byte{8}, 32)}, payload: []byte("x")}
}

func (m relayMsg) params(batch bool) []byte {
	msg, seg := capnp.NewSingleSegmentMessage(nil)
	set := func(p relaySetters) {
		p.SetOrigin(m.origin)
		p.SetHops(m.hops)
		id, _ := p.NewRelay()
		id.SetStream(m.stream)
		id.SetSeq(m.seq)
		p.SetSenderKey(m.from)
		p.SetPayload(m.payload)
		p.SetChannelId(m.channel)
	}
	if batch {
		p, _ := fedschema.NewRootFederationService_relayBatchEnqueue_Params(seg)
		set(p)
		l, _ := p.NewRecipientKeys(int32(len(m.to)))
		for i, k := range m.to {
			l.Set(i, k)
		}
	} else {
		p, _ := fedschema.NewRootFederationService_relayEnqueue_Params(seg)
		set(p)
		p.SetRecipientKey(m.to[0])
	}
	b, err := msg.Marshal()
	if err != nil {
		panic(err)
	}
	return b
}

// decodeRelay runs the decoders on a marshaled parameter message; ok is
// false when the bytes are not a Cap'n Proto message at all (the RPC
// layer drops those before any decoder of ours runs).
func decodeRelay(b []byte, batch bool) (r Relay, ok bool, err error) {
	msg, err := capnp.Unmarshal(b)
	if err != nil {
		return Relay{}, false, err
	}
	msg.ResetReadLimit(1 << 20)
	root, err := msg.Root()
	if err != nil {
		return Relay{}, false, err
	}
	if batch {
		r, err = testLimits.relayBatch("a.test", fedschema.FederationService_relayBatchEnqueue_Params(root.Struct()))
	} else {
		r, err = testLimits.relayOne("a.test", fedschema.FederationService_relayEnqueue_Params(root.Struct()))
	}
	return r, true, err
}

func TestRelayArgs(t *testing.T) {
	r, _, err := decodeRelay(validRelay().params(false), false)
	if err != nil || r.Origin != "a.test" || r.Hops != 1 || r.Seq != 1 || len(r.To) != 1 || string(r.Payload) != "x" {
		t.Fatalf("valid relay: %+v, %v", r, err)
	}
	for name, tc := range map[string]struct {
		mod   func(*relayMsg)
		batch bool
		code  errcode.Code
	}{
		"other origin":       {func(m *relayMsg) { m.origin = "b.test" }, false, errcode.Unauthenticated},
		"origin not domain":  {func(m *relayMsg) { m.origin = "A..b" }, false, errcode.InvalidArgument},
		"hops 0":             {func(m *relayMsg) { m.hops = 0 }, false, errcode.InvalidArgument},
		"hops above limit":   {func(m *relayMsg) { m.hops = 5 }, false, errcode.FailedPrecondition},
		"short stream":       {func(m *relayMsg) { m.stream = m.stream[:15] }, false, errcode.InvalidArgument},
		"seq 0":              {func(m *relayMsg) { m.seq = 0 }, false, errcode.InvalidArgument},
		"short sender":       {func(m *relayMsg) { m.from = m.from[:31] }, false, errcode.InvalidArgument},
		"long recipient":     {func(m *relayMsg) { m.to[0] = make([]byte, 33) }, false, errcode.InvalidArgument},
		"empty payload":      {func(m *relayMsg) { m.payload = nil }, false, errcode.InvalidArgument},
		"payload over limit": {func(m *relayMsg) { m.payload = make([]byte, 65) }, false, errcode.ResourceExhausted},
		"bad channel":        {func(m *relayMsg) { m.channel = make([]byte, 15) }, false, errcode.InvalidArgument},
		"zero channel":       {func(m *relayMsg) { m.channel = make([]byte, 16) }, false, errcode.NotFound},
		"no recipients":      {func(m *relayMsg) { m.to = [][]byte{} }, true, errcode.InvalidArgument},
		"too many":           {func(m *relayMsg) { m.to = [][]byte{m.from, m.from, m.from, m.from} }, true, errcode.ResourceExhausted},
	} {
		m := validRelay()
		tc.mod(&m)
		_, _, err := decodeRelay(m.params(tc.batch), tc.batch)
		if errcode.Of(err) != tc.code {
			t.Errorf("%s: %v, want %s", name, err, tc.code)
		}
	}
}

// FuzzRelayArgs: any bytes a peer sends as relayEnqueue or
// relayBatchEnqueue parameters decode to a checked Relay or an error with
// a code, never a panic; what decodes stays within the limits.
func FuzzRelayArgs(f *testing.F) {
	v := validRelay()
	f.Add(v.params(false), false)
	v.channel = bytes.Repeat([]byte{1}, 16)
	v.to = append(v.to, bytes.Repeat([]byte{9}, 32))
	f.Add(v.params(true), true)
	f.Add([]byte{0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, false)
	f.Fuzz(func(t *testing.T, b []byte, batch bool) {
		r, ok, err := decodeRelay(b, batch)
		if !ok {
			return
		}
		if err != nil {
			var e *errcode.Error
			if !errors.As(err, &e) || e.Code == errcode.Internal {
				t.Fatalf("a refusal without a client-side code: %v", err)
			}
			return
		}
		if r.Origin != "a.test" || r.Hops < 1 || r.Hops > testLimits.maxHops || r.Seq == 0 ||
			len(r.To) == 0 || len(r.To) > testLimits.maxBatch || len(r.Payload) == 0 || len(r.Payload) > testLimits.maxPayload {
			t.Fatalf("decoded out of bounds: %+v", r)
		}
	})
}

func TestCheckDomain(t *testing.T) {
	for _, ok := range []string{"a.test", "localhost", "x-1.example.org", strings.Repeat("a", 63) + ".b"} {
		if err := CheckDomain(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "A.test", "a..test", "a.test.", ".a", "-a.test", "a-.test", "a_b.test", "a test", strings.Repeat("a", 64) + ".b", strings.Repeat("a.", 127) + "aa", "bob@b.test"} {
		if err := CheckDomain(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestSplitAddress(t *testing.T) {
	for in, want := range map[string][2]string{
		"bob":            {"bob", ""},
		"bob@b.test":     {"bob", "b.test"},
		"a@b@c.test":     {"a@b", "c.test"},
		"@b.test":        {"", "b.test"},
		"bob@":           {"bob", ""},
		"name with sp@x": {"name with sp", "x"},
	} {
		if n, d := SplitAddress(in); n != want[0] || d != want[1] {
			t.Errorf("SplitAddress(%q) = %q, %q", in, n, d)
		}
	}
}

// FuzzSplitAddress: a user address splits at its last '@' and joins back.
func FuzzSplitAddress(f *testing.F) {
	f.Add("bob@b.test")
	f.Add("a@b@c")
	f.Fuzz(func(t *testing.T, s string) {
		n, d := SplitAddress(s)
		if strings.Contains(d, "@") {
			t.Fatalf("domain %q holds '@'", d)
		}
		if d != "" || strings.Contains(s, "@") {
			if n+"@"+d != s {
				t.Fatalf("%q split into %q, %q", s, n, d)
			}
		} else if n != s {
			t.Fatalf("%q split into %q", s, n)
		}
	})
}

func TestConfigCheck(t *testing.T) {
	cert := testCert(t)
	own := rpc.CertificateFingerprint(cert)
	pin := rpc.Fingerprint{1}
	peer := Peer{Domain: "b.test", Addr: "127.0.0.1:7445", Fingerprint: pin}
	good := Config{Domain: "a.test", Certificate: cert, Peers: []Peer{peer}}
	if err := good.Check(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Config){
		"no domain":        func(c *Config) { c.Domain = "" },
		"no certificate":   func(c *Config) { c.Certificate.Certificate = nil },
		"own domain":       func(c *Config) { c.Peers[0].Domain = "a.test" },
		"twice":            func(c *Config) { c.Peers = append(c.Peers, peer) },
		"same pin":         func(c *Config) { c.Peers = append(c.Peers, Peer{Domain: "c.test", Addr: "x:1", Fingerprint: pin}) },
		"own pin":          func(c *Config) { c.Peers[0].Fingerprint = own },
		"no pin":           func(c *Config) { c.Peers[0].Fingerprint = rpc.Fingerprint{} },
		"bad address":      func(c *Config) { c.Peers[0].Addr = "nowhere" },
		"bad peer domain":  func(c *Config) { c.Peers[0].Domain = "B.test" },
		"hops beyond byte": func(c *Config) { c.MaxHops = 256 },
	} {
		c := good
		c.Peers = append([]Peer(nil), good.Peers...)
		mod(&c)
		if err := c.Check(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func testCert(t *testing.T) tls.Certificate {
	t.Helper()
	cert, err := rpc.LoadOrCreateCertificate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
