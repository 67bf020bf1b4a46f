package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/quicproquo/qpq/node/server"
	"github.com/quicproquo/qpq/p2p"
	"github.com/quicproquo/qpq/relay/federation"
	"github.com/quicproquo/qpq/rpc"
)

// runServe runs a home server until ctx ends. On start it prints what
// clients, nodes and operators need: the listen address, the data
// directory, the certificate fingerprint clients pin, the domain, and the
// libp2p AddrInfo nodes use as their relay.
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := loadServeConfig(args, os.Getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	level, _ := logLevel(c.LogLevel) // checked by loadServeConfig
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	sc, err := c.serverConfig(logger)
	if err != nil {
		return err
	}
	s, err := server.Start(sc)
	if err != nil {
		return err
	}
	printInfo(stdout, s.Info())
	return s.Run(ctx)
}

// printInfo prints the start-up lines; tests and scripts read them.
func printInfo(w io.Writer, in server.Info) {
	fmt.Fprintf(w, "listening on %s (QUIC, ALPN %s)\n", in.Addr, rpc.ALPN)
	fmt.Fprintf(w, "data in %s\n", in.DataDir)
	if in.Domain != "" {
		fmt.Fprintf(w, "domain %s\n", in.Domain)
	}
	if in.Metrics != "" {
		fmt.Fprintf(w, "metrics on %s\n", in.Metrics)
	}
	if in.Admin != "" {
		fmt.Fprintf(w, "admin socket %s (qpq backup)\n", in.Admin)
	}
	if in.P2P != nil {
		// One line of JSON (a peer.AddrInfo): what a node lists as its
		// relay.
		if b, err := p2p.EncodeEndpoint(*in.P2P); err == nil {
			fmt.Fprintf(w, "p2p %s\n", b)
		}
	}
	if in.Federation != nil {
		fmt.Fprintf(w, "federation on %s (QUIC, ALPN %s)\n", in.Federation, federation.ALPN)
	}
	if in.MDNS != "" {
		fmt.Fprintf(w, "mdns announcing server=%s domain=%s\n", in.MDNS, in.Domain)
	}
	// Last: readers wait for it as the sign that start-up is complete.
	fmt.Fprintf(w, "fingerprint %s\n", in.Fingerprint)
}
