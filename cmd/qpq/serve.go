package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/quicproquo/qpq/relay"
	"github.com/quicproquo/qpq/rpc"
)

// runServe runs a home server until ctx ends. On start it prints the
// listen address, the data directory and the certificate fingerprint
// clients pin.
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := loadServeConfig(args, os.Getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	level, _ := logLevel(c.LogLevel) // checked by loadServeConfig
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	rc := c.relayConfig(logger.With("component", "relay"))
	rc.Registry = prometheus.NewRegistry()
	rc.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r, err := relay.Open(rc)
	if err != nil {
		return fmt.Errorf("%w (is another qpq serve using %s?)", err, c.Data)
	}
	defer r.Close()

	var cert tls.Certificate
	if c.TLSCert != "" {
		cert, err = rpc.LoadCertificate(c.TLSCert, c.TLSKey)
	} else {
		cert, err = rpc.LoadOrCreateCertificate(c.Data)
	}
	if err != nil {
		return err
	}
	ln, err := rpc.Listen(c.Listen, cert, rpc.ListenOptions{
		MaxConnections: c.Limits.MaxConnections,
		Serve:          rpc.ServeOptions{MaxMessageSize: maxMessageSize(c)},
		Logger:         logger.With("component", "rpc"),
	})
	if err != nil {
		return err
	}

	var metricsDone <-chan error
	if c.Metrics != "" {
		mln, err := net.Listen("tcp", c.Metrics)
		if err != nil {
			ln.Close()
			return fmt.Errorf("metrics: %w", err)
		}
		srv := &http.Server{
			Handler:           promhttp.HandlerFor(r.Registry(), promhttp.HandlerOpts{}),
			ReadHeaderTimeout: 10 * time.Second,
		}
		metricsDone = serveHTTP(ctx, srv, mln)
		fmt.Fprintf(stdout, "metrics on http://%s/metrics\n", mln.Addr())
	}

	fmt.Fprintf(stdout, "listening on %s (QUIC, ALPN %s)\n", ln.Addr(), rpc.ALPN)
	fmt.Fprintf(stdout, "data in %s\n", c.Data)
	fmt.Fprintf(stdout, "fingerprint %s\n", rpc.CertificateFingerprint(cert))
	logger.Info("serving", "listen", ln.Addr().String(), "rate_limits", c.RateLimit)

	err = r.Serve(ctx, ln)
	cancel() // stops the metrics server too when Serve failed on its own
	if metricsDone != nil {
		if merr := <-metricsDone; err == nil {
			err = merr
		}
	}
	return err
}

// maxMessageSize lets the largest legal call through: a payload (or key
// package) at its limit plus the other fields.
func maxMessageSize(c serveConfig) uint64 {
	largest := max(c.Limits.MaxPayload, c.Limits.MaxKeyPackage, relay.DefaultMaxPayload)
	return uint64(largest) + 1<<20
}

// serveHTTP serves srv until ctx ends; the channel yields its error.
func serveHTTP(ctx context.Context, srv *http.Server, ln net.Listener) <-chan error {
	done := make(chan error, 1)
	go func() {
		err := srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		done <- err
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	return done
}
