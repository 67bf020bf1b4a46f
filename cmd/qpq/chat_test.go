package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestChatFlags(t *testing.T) {
	home := t.TempDir()
	env := func(k string) string {
		if k == "HOME" {
			return home
		}
		return ""
	}
	c, err := parseChatFlags([]string{"--user", "alice", "--json", "--mdns=false", "--mdns-iface", "eth0, wlan0",
		"--listen", "/ip4/10.0.0.1/udp/0/quic-v1", "--server", "h:1", "--log-level", "debug",
		"--peer", "/ip4/10.0.0.2/udp/4001/quic-v1/p2p/12D3KooWGFkdjWQBM3A57uk8idh9FFkmntVVQoc74XuCwCgmY75u"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.user != "alice" || !c.json || c.mdns || len(c.mdnsIfaces) != 2 || c.mdnsIfaces[1] != "wlan0" ||
		len(c.listen) != 1 || c.server != "h:1" || len(c.peers) != 1 || len(c.peers[0].Addrs) != 1 {
		t.Fatalf("parsed %+v", c)
	}
	if want := filepath.Join(home, ".local", "share", "quicproquo", "chat", "alice"); c.data != want {
		t.Fatalf("data %q, want %q", c.data, want)
	}
	for _, bad := range [][]string{
		{"--user", "a", "--peer", "/ip4/10.0.0.2/udp/1/quic-v1"}, // no /p2p/
		{"--user", "a", "--listen", "not-a-multiaddr"},
		{"--user", "a", "--log-level", "loud"},
		{"--user", "a", "extra"},
		{"--user", "../x"},
	} {
		if _, err := parseChatFlags(bad, env, io.Discard); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := parseChatFlags([]string{"-h"}, env, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
}

// TestChatDefaultDir: without --user, the only user with data is chosen;
// with several, the user must say.
func TestChatDefaultDir(t *testing.T) {
	home := t.TempDir()
	env := func(k string) string {
		if k == "HOME" {
			return home
		}
		return ""
	}
	if _, err := defaultChatDir(env, ""); err == nil || !strings.Contains(err.Error(), "--user") {
		t.Fatalf("no data yet: %v", err)
	}
	base := filepath.Join(home, ".local", "share", "quicproquo", "chat")
	os.MkdirAll(filepath.Join(base, "alice"), 0o700)
	if d, err := defaultChatDir(env, ""); err != nil || filepath.Base(d) != "alice" {
		t.Fatalf("one user: %q, %v", d, err)
	}
	os.MkdirAll(filepath.Join(base, "bob"), 0o700)
	if _, err := defaultChatDir(env, ""); err == nil || !strings.Contains(err.Error(), "alice, bob") {
		t.Fatalf("two users: %v", err)
	}
}

func TestChatServerNeedsPassword(t *testing.T) {
	t.Setenv("QPQ_PASSWORD", "")
	r, w, err := os.Pipe() // not a terminal
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	err = runChat(t.Context(), []string{"--data", t.TempDir(), "--user", "alice", "--server", "127.0.0.1:1"}, r, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "QPQ_PASSWORD") {
		t.Fatalf("runChat: %v", err)
	}
}
