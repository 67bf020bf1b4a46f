package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
		"unknown key":       {"--config", write(`listn = "x"`)},
		"unknown table key": {"--config", write("[limits]\nmax_payloads = 1")},
		"bad duration":      {"--token-lifetime", "soon"},
		"bad switch":        {"--rate-limit=maybe"},
		"cert without key":  {"--tls-cert", "c.pem"},
		"bad log level":     {"--log-level", "loud"},
		"negative limit":    {"--config", write("[limits]\nmax_payload = -1")},
		"missing file":      {"--config", filepath.Join(dir, "nope.toml")},
		"stray argument":    {"extra"},
		"unknown flag":      {"--nope"},
	} {
		if _, err := loadServeConfig(append(args, "--data", dir), env(nil), io.Discard); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := loadServeConfig([]string{"-h"}, env(nil), io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
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
		if err := parseConfigFile(b, &c); err == nil {
			if c.TokenLifetime < 0 || c.Limits.MaxPayload < 0 {
				t.Fatalf("accepted a negative value: %+v", c)
			}
		}
	})
}
