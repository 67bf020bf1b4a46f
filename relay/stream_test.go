package relay

import (
	"context"
	"net"
	"testing"

	"go.uber.org/goleak"

	"github.com/quicproquo/qpq/relay/store"
	"github.com/quicproquo/qpq/rpc"
	"github.com/quicproquo/qpq/rpc/errcode"
	"github.com/quicproquo/qpq/schema"
)

// peerAuth stands for the P2P link's authenticator: the transport has
// already authenticated the peer, so the call's auth field is ignored.
type peerAuth struct{ id store.Key }

func (p peerAuth) Authenticate(context.Context, schema.Auth) (Caller, error) {
	return Caller{Identity: p.id, Session: "peer"}, nil
}

// TestServiceOverAnyStream serves the same Service over a plain byte
// stream with a pluggable Authenticator and accounts off, as a node does
// over its P2P link, and drives it with the same typed client.
func TestServiceOverAnyStream(t *testing.T) {
	defer goleak.VerifyNone(t)
	r, err := Open(Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	peer := store.Key(randKey())
	svc := r.NewService(ServiceOptions{Auth: peerAuth{peer}})

	serverEnd, clientEnd := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		rpc.ServeStream(ctx, serverEnd, svc, rpc.ServeOptions{})
	}()
	conn := rpc.NewConn(clientEnd)
	c := conn.Client() // no token: the authenticator names the caller

	if seq, err := c.Enqueue(bg, peer[:], nil, []byte("to myself")); err != nil || seq != 1 {
		t.Fatalf("enqueue: %d, %v", seq, err)
	}
	envs, err := c.Fetch(bg, peer[:], nil, 0)
	if err != nil || len(envs) != 1 || string(envs[0].Data) != "to myself" {
		t.Fatalf("fetch: %v, %v", envs, err)
	}
	_, err = c.OpaqueLoginStart(bg, "alice", make([]byte, 96))
	wantCode(t, "login where accounts are off", err, errcode.FailedPrecondition)
	_, err = c.Fetch(bg, randKey(), nil, 0)
	wantCode(t, "another identity's inbox", err, errcode.PermissionDenied)

	conn.Close()
	cancel()
	<-served
}
