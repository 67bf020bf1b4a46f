package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/quicproquo/qpq/node"
	"github.com/quicproquo/qpq/node/repl"
)

const chatUsage = `usage: qpq chat [flags]

Runs your node and its chat prompt: creates your identity on first run,
finds peers on the LAN by mDNS and talks to them directly, and with
--server keeps an account at a home server for when peers are not
reachable directly. Type /help at the prompt. Without a terminal on stdin
it reads one command per line; --json prints one JSON event per line
(docs/CLI.md).

The home server password comes from QPQ_PASSWORD or, at a terminal, a
prompt.

`

// chatConfig is what `qpq chat`'s flags say.
type chatConfig struct {
	data, user, server string
	json               bool
	mdns               bool
	mdnsIfaces         []string
	listen             []ma.Multiaddr
	peers, relays      []peer.AddrInfo
	serverOnly         bool
	logLevel           slog.Level
}

func parseChatFlags(args []string, getenv func(string) string, stderr io.Writer) (chatConfig, error) {
	c := chatConfig{mdns: true, logLevel: slog.LevelError}
	fs := flag.NewFlagSet("qpq chat", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.data, "data", "", "data directory (default $XDG_DATA_HOME/quicproquo/chat/USER)")
	fs.StringVar(&c.user, "user", "", "your user name (needed on the first run)")
	fs.StringVar(&c.server, "server", "", "home server HOST:PORT (none: LAN only)")
	fs.BoolVar(&c.json, "json", false, "print events as JSON lines (for programs)")
	fs.BoolVar(&c.serverOnly, "server-only", false, "beyond the LAN, talk only through the home server: contacts never learn this device's IP address")
	fs.BoolFunc("mdns", "LAN discovery by mDNS, on or off (default on)", func(v string) error { return parseSwitch(v, &c.mdns) })
	fs.Func("mdns-iface", "comma-separated interfaces for mDNS and the default listen addresses", func(v string) error {
		c.mdnsIfaces = splitList(v)
		return nil
	})
	fs.Func("listen", "comma-separated P2P listen multiaddrs (default: QUIC on the mDNS interfaces)", func(v string) error {
		for _, s := range splitList(v) {
			a, err := ma.NewMultiaddr(s)
			if err != nil {
				return err
			}
			c.listen = append(c.listen, a)
		}
		return nil
	})
	addrInfos := func(dst *[]peer.AddrInfo) func(string) error {
		return func(v string) error {
			for _, s := range splitList(v) {
				info, err := peer.AddrInfoFromString(s)
				if err != nil {
					return fmt.Errorf("%q: want a multiaddr ending in /p2p/PEER-ID: %v", s, err)
				}
				*dst = append(*dst, *info)
			}
			return nil
		}
	}
	fs.Func("peer", "a peer to link to besides those mDNS finds: multiaddr with /p2p/PEER-ID (repeatable)", addrInfos(&c.peers))
	fs.Func("relay", "a libp2p circuit relay (home server) to hold a reservation at (repeatable)", addrInfos(&c.relays))
	fs.Func("log-level", "debug, info, warn or error (default error); logs go to stderr", func(v string) error {
		l, err := logLevel(v)
		c.logLevel = l
		return err
	})
	fs.Usage = func() {
		fmt.Fprint(stderr, chatUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "qpq chat: unexpected argument %q\n", fs.Arg(0))
		return c, errUsage
	}
	if c.data == "" {
		d, err := defaultChatDir(getenv, c.user)
		if err != nil {
			return c, err
		}
		c.data = d
	}
	return c, nil
}

// defaultChatDir is $XDG_DATA_HOME/quicproquo/chat/USER (or under
// ~/.local/share), one per user name so that several users can run on one
// machine. Without a user name, the only directory there is used.
func defaultChatDir(getenv func(string) string, user string) (string, error) {
	server, err := defaultDataDir(getenv)
	if err != nil {
		return "", err
	}
	base := filepath.Join(filepath.Dir(server), "chat")
	if user != "" {
		if strings.ContainsAny(user, `/\`) || user == "." || user == ".." {
			return "", fmt.Errorf("user name %q cannot name a directory; pass --data DIR", user)
		}
		return filepath.Join(base, user), nil
	}
	entries, _ := os.ReadDir(base)
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	switch len(dirs) {
	case 1:
		return filepath.Join(base, dirs[0]), nil
	case 0:
		return "", errors.New("no identity yet: start with --user NAME")
	}
	return "", fmt.Errorf("several users have data in %s (%s): pass --user NAME", base, strings.Join(dirs, ", "))
}

// runChat runs a node and its REPL until stdin ends, /quit, or ctx ends.
func runChat(ctx context.Context, args []string, stdin *os.File, stdout, stderr io.Writer) error {
	c, err := parseChatFlags(args, os.Getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	fd := int(stdin.Fd())
	tty := repl.IsTerminal(fd)
	var password func(context.Context) ([]byte, error)
	if c.server != "" {
		pw := []byte(os.Getenv("QPQ_PASSWORD"))
		if len(pw) == 0 {
			if !tty {
				return errors.New("--server needs a password: set QPQ_PASSWORD (stdin is not a terminal to ask at)")
			}
			if pw, err = repl.ReadPassword(fd, stdin, stderr, fmt.Sprintf("password for %s at %s: ", displayUser(c), c.server)); err != nil {
				return fmt.Errorf("reading the password: %w", err)
			}
		}
		password = func(context.Context) ([]byte, error) { return pw, nil }
	}
	r := repl.New(stdout, repl.Config{JSON: c.json, Color: tty && !c.json && os.Getenv("NO_COLOR") == ""})
	n, err := node.Open(ctx, node.Config{
		DataDir:        c.data,
		Username:       c.user,
		Server:         c.server,
		Password:       password,
		ListenAddrs:    c.listen,
		NoMDNS:         !c.mdns,
		MDNSInterfaces: c.mdnsIfaces,
		Peers:          c.peers,
		Relays:         c.relays,
		ServerOnly:     c.serverOnly,
		OnEvent:        r.Event,
		Logger:         slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: c.logLevel})),
	})
	if err != nil {
		return err
	}
	defer n.Close()
	runCtx, cancel := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- n.Run(runCtx) }()
	if !tty {
		fd = -1
	}
	err = r.Run(ctx, n, stdin, fd)
	cancel()
	<-runDone
	return err
}

func displayUser(c chatConfig) string {
	if c.user != "" {
		return c.user
	}
	return filepath.Base(c.data)
}
