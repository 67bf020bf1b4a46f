package errcode_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"

	capnp "capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/rpc"

	"github.com/quicproquo/qpq/rpc/errcode"
	"github.com/quicproquo/qpq/schema"
)

func TestOfParsesWireText(t *testing.T) {
	tests := []struct {
		err  error
		want errcode.Code
	}{
		{nil, ""},
		{errcode.New(errcode.NotFound, "no such user"), errcode.NotFound},
		{fmt.Errorf("relay: %w", errcode.New(errcode.AlreadyExists, "x")), errcode.AlreadyExists},
		{errors.New("rpc: remote: permission-denied: not your inbox"), errcode.PermissionDenied},
		{errors.New("invalid-argument: key must be 32 bytes"), errcode.InvalidArgument},
		{errors.New("something broke"), errcode.Internal},
		// A code word inside the human message is not the code.
		{errors.New("internal: user said not-found: x"), errcode.Internal},
		{errors.New("rpc: xnot-found: y"), errcode.Internal},
	}
	for _, tt := range tests {
		if got := errcode.Of(tt.err); got != tt.want {
			t.Errorf("Of(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestIs(t *testing.T) {
	err := fmt.Errorf("wrap: %w", errcode.New(errcode.NotFound, "a"))
	if !errors.Is(err, errcode.New(errcode.NotFound, "")) {
		t.Fatal("errors.Is should match on code")
	}
	if errors.Is(err, errcode.New(errcode.Internal, "")) {
		t.Fatal("errors.Is matched a different code")
	}
}

// healthFails answers health with a coded error, to see the code survive a
// real Cap'n Proto round trip.
type healthFails struct{ schema.NodeService_Server }

func (healthFails) Health(context.Context, schema.NodeService_health) error {
	return errcode.New(errcode.ResourceExhausted, "slow down")
}

func TestCodeSurvivesRPC(t *testing.T) {
	a, b := net.Pipe()
	srv := rpc.NewConn(rpc.NewStreamTransport(a), &rpc.Options{
		BootstrapClient: capnp.Client(schema.NodeService_ServerToClient(healthFails{})),
	})
	defer srv.Close()
	cli := rpc.NewConn(rpc.NewStreamTransport(b), nil)
	defer cli.Close()
	ns := schema.NodeService(cli.Bootstrap(context.Background()))
	defer ns.Release()
	f, release := ns.Health(context.Background(), nil)
	defer release()
	_, err := f.Struct()
	if got := errcode.Of(err); got != errcode.ResourceExhausted {
		t.Fatalf("code = %q from %q", got, err)
	}
	if got := errcode.Message(err); got != "slow down" {
		t.Fatalf("message = %q from %q", got, err)
	}
}

// TestStorage: a storage failure keeps its cause out of the wire text and
// in the answering side's log, and a full disk is resource-exhausted.
func TestStorage(t *testing.T) {
	cause := &fs.PathError{Op: "write", Path: "/var/lib/quicproquo/qpq.db", Err: syscall.ENOSPC}
	for _, tt := range []struct {
		cause error
		code  errcode.Code
	}{
		{cause, errcode.ResourceExhausted},
		{fmt.Errorf("store: %w", &fs.PathError{Op: "sync", Path: "/var/lib/quicproquo/qpq.db", Err: syscall.EIO}), errcode.Internal},
	} {
		err := errcode.Storage(tt.cause)
		if errcode.Of(err) != tt.code || !errcode.Local(err) || !errors.Is(err, tt.cause) {
			t.Errorf("Storage(%v) = %v: code %q, local %v", tt.cause, err, errcode.Of(err), errcode.Local(err))
		}
		if strings.Contains(err.Error(), "/var/lib") {
			t.Errorf("wire text %q names the server's files", err)
		}
		var log bytes.Buffer
		slog.New(slog.NewTextHandler(&log, nil)).Error("call failed", "err", err)
		if !strings.Contains(log.String(), tt.cause.Error()) {
			t.Errorf("log %q lacks the cause", log.String())
		}
	}
	if errcode.Local(errcode.New(errcode.Internal, "x")) || errcode.Local(errors.New("x")) {
		t.Error("Local without a cause")
	}
}
