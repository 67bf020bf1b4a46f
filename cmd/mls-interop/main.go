// Command mls-interop is the MLS client of the IETF MLS working group's
// interop harness (github.com/mlswg/mls-implementations, interop/): a gRPC
// server implementing the MLSClient service of mls_client.proto on top of
// package mls, so that the working group's test runner can drive it
// against other implementations.
//
//	mls-interop [-host 127.0.0.1] [-port 50051]
//
// It listens on loopback unless told otherwise, keeps every group state in
// memory and logs one line per failed RPC (never keys or plaintext). It
// stops on SIGINT or SIGTERM. The in-repo tests (go test ./cmd/mls-interop)
// run the runner's scenario files against two instances of it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"google.golang.org/grpc"

	"github.com/quicproquo/qpq/cmd/mls-interop/mlspb"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "mls-interop:", err)
		os.Exit(1)
	}
}

// run parses the flags and serves until ctx ends.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("mls-interop", flag.ContinueOnError)
	fs.SetOutput(stderr)
	host := fs.String("host", "127.0.0.1", "address to listen on (loopback by default)")
	port := fs.Int("port", 50051, "TCP port to listen on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q; see -h", fs.Args())
	}
	if *port < 0 || *port > 65535 {
		return fmt.Errorf("port %d out of range", *port)
	}
	lis, err := net.Listen("tcp", net.JoinHostPort(*host, strconv.Itoa(*port)))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("component", "mls-interop")
	log.Info("listening", "addr", lis.Addr().String())
	return serve(ctx, lis, log)
}

// serve runs the MLSClient service on lis until ctx ends, then stops
// gracefully and returns once every RPC has finished.
func serve(ctx context.Context, lis net.Listener, log *slog.Logger) error {
	gs := grpc.NewServer(grpc.UnaryInterceptor(logFailures(log)))
	mlspb.RegisterMLSClientServer(gs, newServer())
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(lis) }()
	select {
	case <-ctx.Done():
		gs.GracefulStop()
		if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return err
		}
		return nil
	case err := <-errc:
		gs.Stop()
		return err
	}
}

// logFailures logs the method and error of every failed RPC. Errors of
// package mls carry no key material or plaintext.
func logFailures(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(ctx, req)
		if err != nil {
			log.Warn("rpc failed", "method", info.FullMethod, "err", err)
		}
		return resp, err
	}
}
