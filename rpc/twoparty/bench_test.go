package twoparty

import (
	"context"
	"io"
	"testing"

	"capnproto.org/go/capnp/v3"
	capnprpc "capnproto.org/go/capnp/v3/rpc"

	"github.com/quicproquo/qpq/schema"
)

// The round trip of one call, one at a time, over loopback TCP, beside a
// bare 64-byte echo on the same kind of stream (BenchmarkEchoBaseline):
// the ratio is what the RPC layer adds to a round trip. The capnp-go
// variant is rpc.Conn on both ends, as before this package.

func BenchmarkHealthRoundTrip(b *testing.B) {
	a, s := tcpPair(b)
	server := NewConn(s, Options{Bootstrap: capnp.Client(schema.NodeService_ServerToClient(newService()))})
	defer server.Close()
	client := NewConn(a, Options{})
	defer client.Close()
	ns := schema.NodeService(client.Bootstrap())
	defer ns.Release()
	benchHealth(b, ns)
}

func BenchmarkHealthRoundTripCapnpGo(b *testing.B) {
	a, s := tcpPair(b)
	server := capnprpc.NewConn(capnprpc.NewStreamTransport(s), &capnprpc.Options{
		BootstrapClient: capnp.Client(schema.NodeService_ServerToClient(newService())),
	})
	defer server.Close()
	client := capnprpc.NewConn(capnprpc.NewStreamTransport(a), nil)
	defer client.Close()
	ns := schema.NodeService(client.Bootstrap(context.Background()))
	defer ns.Release()
	benchHealth(b, ns)
}

func benchHealth(b *testing.B, ns schema.NodeService) {
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := health(ctx, ns); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEchoBaseline(b *testing.B) {
	a, s := tcpPair(b)
	defer a.Close()
	defer s.Close()
	go io.Copy(s, s)
	buf := make([]byte, 64)
	for b.Loop() {
		if _, err := a.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(a, buf); err != nil {
			b.Fatal(err)
		}
	}
}
