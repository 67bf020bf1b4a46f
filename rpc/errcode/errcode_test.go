package errcode_test

import (
	"context"
	"errors"
	"fmt"
	"net"
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
