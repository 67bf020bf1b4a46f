package main

import (
	"errors"
	"flag"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quicproquo/qpq/p2p"
	"github.com/quicproquo/qpq/relay"
	"github.com/quicproquo/qpq/relay/store"
	"github.com/quicproquo/qpq/rpc"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "qpq.toml")
	os.WriteFile(file, []byte(`
listen = "127.0.0.1:1000"
data = "/from/file"
metrics = "127.0.0.1:9000"
token_lifetime = "2h"
rate_limit = true
mdns_iface = ["eth0"]

[limits]
max_payload = 4096
max_fetch_wait = "30s"

[rate_limits]
per_token = 10
`), 0o600)
	getenv := env(map[string]string{
		"QPQ_CONFIG":     file,
		"QPQ_LISTEN":     "127.0.0.1:2000",
		"QPQ_RATE_LIMIT": "off",
		"QPQ_MDNS_IFACE": "eth1, eth2",
	})
	c, err := loadServeConfig([]string{"--listen", "127.0.0.1:3000", "--mdns=false"}, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case c.Listen != "127.0.0.1:3000":
		t.Errorf("listen %q: the flag must win", c.Listen)
	case c.Data != "/from/file":
		t.Errorf("data %q: the file's value must hold", c.Data)
	case c.RateLimit:
		t.Error("rate limit on: the environment must win over the file")
	case c.MDNS:
		t.Error("mdns on after --mdns=false")
	case !c.P2P:
		t.Error("p2p off by default")
	case strings.Join(c.MDNSIfaces, ",") != "eth1,eth2":
		t.Errorf("mdns ifaces %v", c.MDNSIfaces)
	case c.TokenLifetime != 2*time.Hour || c.Limits.MaxPayload != 4096 || c.Limits.MaxFetchWait != 30*time.Second || c.Rates.PerToken != 10:
		t.Errorf("file values lost: %+v", c)
	}
	rc := c.relayConfig(nil)
	if !rc.Rates.Off || rc.Limits.MaxPayload != 4096 || rc.TokenLifetime != 2*time.Hour {
		t.Errorf("relay config %+v", rc)
	}

	// --rate-limit=off and a bare --rate-limit.
	c, _ = loadServeConfig([]string{"--rate-limit=off", "--data", dir}, env(nil), io.Discard)
	if c.RateLimit {
		t.Error("--rate-limit=off left limits on")
	}
	c, _ = loadServeConfig([]string{"--rate-limit=off", "--rate-limit", "--data", dir}, env(nil), io.Discard)
	if !c.RateLimit {
		t.Error("the last flag did not win")
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := loadServeConfig(nil, env(map[string]string{"XDG_DATA_HOME": "/xdg"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Data != "/xdg/quicproquo/server" || c.Listen != DefaultListen || !c.RateLimit || !c.MDNS || !c.P2P {
		t.Errorf("defaults %+v", c)
	}
	c, _ = loadServeConfig(nil, env(map[string]string{"HOME": "/home/u"}), io.Discard)
	if c.Data != "/home/u/.local/share/quicproquo/server" {
		t.Errorf("data without XDG_DATA_HOME = %q", c.Data)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		f := filepath.Join(dir, "c.toml")
		os.WriteFile(f, []byte(s), 0o600)
		return f
	}
	for name, args := range map[string][]string{
		"unknown key":          {"--config", write(`listn = "x"`)},
		"unknown table key":    {"--config", write("[limits]\nmax_payloads = 1")},
		"bad duration":         {"--token-lifetime", "soon"},
		"bad switch":           {"--rate-limit=maybe"},
		"cert without key":     {"--tls-cert", "c.pem"},
		"bad log level":        {"--log-level", "loud"},
		"negative limit":       {"--config", write("[limits]\nmax_payload = -1")},
		"missing file":         {"--config", filepath.Join(dir, "nope.toml")},
		"stray argument":       {"extra"},
		"unknown flag":         {"--nope"},
		"bad domain":           {"--domain", "A..test"},
		"bad p2p listen":       {"--p2p-listen", "/ip4/1.2.3.4/udp/x"},
		"mdns without p2p":     {"--p2p=false"},
		"negative conn data":   {"--config", write("[relay_service]\nconn_data = -1")},
		"peers without domain": {"--config", write(fedPeer("sha256:" + strings.Repeat("ab", 32)))},
		"bad peer fingerprint": {"--domain", "a.test", "--config", write(fedPeer("sha256:abc"))},
		"bad peer address":     {"--domain", "a.test", "--config", write(strings.Replace(fedPeer("sha256:"+strings.Repeat("ab", 32)), "b.test:7445", "b.test", 1))},
		"unknown peer key":     {"--domain", "a.test", "--config", write(fedPeer("sha256:"+strings.Repeat("ab", 32)) + "pin = 1\n")},
	} {
		if _, err := loadServeConfig(append(args, "--data", dir), env(nil), io.Discard); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := loadServeConfig([]string{"-h"}, env(nil), io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}

func fedPeer(fp string) string {
	return "[[federation.peers]]\ndomain = \"b.test\"\naddress = \"b.test:7445\"\nfingerprint = \"" + fp + "\"\n"
}

// Peers listed in [federation] turn federation on, with the server's
// domain, and limits that are set.
func TestConfigFederation(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "qpq.toml")
	fp := "sha256:" + strings.Repeat("ab", 32)
	os.WriteFile(file, []byte("domain = \"a.test\"\n[federation]\nmax_hops = 3\nmax_queue = 7\n"+fedPeer(fp)), 0o600)
	c, err := loadServeConfig([]string{"--config", file, "--federation-listen", "127.0.0.1:9445", "--data", dir}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := c.serverConfig(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	f := sc.Relay.Federation
	if f == nil || f.Listen != "127.0.0.1:9445" || f.MaxHops != 3 || len(f.Peers) != 1 || f.Peers[0].Domain != "b.test" ||
		f.Peers[0].Fingerprint.String() != fp || sc.Relay.Domain != "a.test" || sc.Relay.Limits.MaxRelayQueue != 7 {
		t.Fatalf("federation config %+v (relay %+v)", f, sc.Relay)
	}
	// docs/OPERATIONS.md: the domain by flag, the peers in the file.
	os.WriteFile(file, []byte(fedPeer(fp)), 0o600)
	if c, err = loadServeConfig([]string{"--domain", "a.test", "--config", file, "--data", dir}, env(nil), io.Discard); err != nil {
		t.Fatalf("--domain with peers in the file: %v", err)
	}
	if sc, err := c.serverConfig(slog.New(slog.DiscardHandler)); err != nil || sc.Relay.Domain != "a.test" || sc.Relay.Federation == nil {
		t.Fatalf("--domain with peers in the file: %v, relay %+v", err, sc.Relay)
	}
	c, _ = loadServeConfig([]string{"--data", dir}, env(nil), io.Discard)
	if sc, _ := c.serverConfig(slog.New(slog.DiscardHandler)); sc.Relay.Federation != nil {
		t.Fatal("federation on without peers")
	}
}

// FuzzConfigFile: the configuration file is operator input; any bytes must
// give a config or an error, never a panic.
func FuzzConfigFile(f *testing.F) {
	f.Add([]byte("listen = \"0.0.0.0:7443\"\n[limits]\nmax_payload = 10\n"))
	f.Add([]byte("token_lifetime = 5\nmdns_iface = [\"a\", \"b\"]"))
	f.Add([]byte("[rate_limits]\nper_token = nan"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c := defaultServeConfig()
		if err := parseConfigFile(b, &c); err == nil && c.check() == nil {
			if c.TokenLifetime < 0 || c.Limits.MaxPayload < 0 {
				t.Fatalf("accepted a negative value: %+v", c)
			}
		}
	})
}

// TestOperationsExampleParses keeps the example in docs/OPERATIONS.md
// true: its TOML block must load.
func TestOperationsExampleParses(t *testing.T) {
	doc, err := os.ReadFile("../../docs/OPERATIONS.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```toml\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("no toml block in docs/OPERATIONS.md")
	}
	c := defaultServeConfig()
	if err := parseConfigFile([]byte(block), &c); err != nil || c.check() != nil {
		t.Fatalf("the documented example does not load: %v", err)
	}
	// The example spells out the defaults; they must be the code's.
	l, r, rs := c.Limits, c.Rates, c.RelayService
	for name, pair := range map[string][2]float64{
		"max_reservations":                {float64(rs.MaxReservations), p2p.DefaultRelayMaxReservations},
		"max_reservations_per_ip":         {float64(rs.MaxReservationsPerIP), p2p.DefaultRelayMaxReservationsPerIP},
		"max_circuits":                    {float64(rs.MaxCircuits), p2p.DefaultRelayMaxCircuits},
		"reservation_ttl":                 {rs.ReservationTTL.Seconds(), p2p.DefaultRelayReservationTTL.Seconds()},
		"conn_duration":                   {rs.ConnDuration.Seconds(), p2p.DefaultRelayConnDuration.Seconds()},
		"conn_data":                       {float64(rs.ConnData), p2p.DefaultRelayConnData},
		"max_payload":                     {float64(l.MaxPayload), relay.DefaultMaxPayload},
		"max_key_package":                 {float64(l.MaxKeyPackage), relay.DefaultMaxKeyPackage},
		"max_key_packages":                {float64(l.MaxKeyPackages), store.DefaultMaxKeyPackages},
		"max_batch_recipients":            {float64(l.MaxBatchRecipients), relay.DefaultMaxBatchRecipients},
		"max_hybrid_keys":                 {float64(l.MaxHybridKeys), relay.DefaultMaxHybridKeys},
		"max_endpoint":                    {float64(l.MaxEndpoint), relay.DefaultMaxEndpoint},
		"max_fetch_bytes":                 {float64(l.MaxFetchBytes), relay.DefaultMaxFetchBytes},
		"max_inbox_depth":                 {float64(l.MaxInboxDepth), store.DefaultMaxInboxDepth},
		"max_waits_per_connection":        {float64(l.MaxWaitsPerConn), relay.DefaultMaxWaitsPerConn},
		"max_connections":                 {float64(l.MaxConnections), rpc.DefaultMaxConnections},
		"max_fetch_wait":                  {l.MaxFetchWait.Seconds(), relay.DefaultMaxFetchWait.Seconds()},
		"per_token":                       {r.PerToken, relay.DefaultPerToken.PerSecond},
		"per_token_burst":                 {float64(r.PerTokenBurst), float64(relay.DefaultPerToken.Burst)},
		"per_address":                     {r.PerAddress, relay.DefaultPerAddress.PerSecond},
		"per_address_burst":               {float64(r.PerAddressBurst), float64(relay.DefaultPerAddress.Burst)},
		"failed_logins_per_user":          {math.Round(r.FailedLoginsPerUser * 1e4), math.Round(relay.DefaultFailedLoginsPerUser.PerSecond * 1e4)},
		"failed_logins_per_user_burst":    {float64(r.FailedLoginsPerUserBurst), float64(relay.DefaultFailedLoginsPerUser.Burst)},
		"failed_logins_per_address":       {r.FailedLoginsPerAddr, relay.DefaultFailedLoginsPerAddr.PerSecond},
		"failed_logins_per_address_burst": {float64(r.FailedLoginsPerAddrBurst), float64(relay.DefaultFailedLoginsPerAddr.Burst)},
	} {
		if pair[0] != pair[1] {
			t.Errorf("docs/OPERATIONS.md says %s = %v, the code's default is %v", name, pair[0], pair[1])
		}
	}
}
