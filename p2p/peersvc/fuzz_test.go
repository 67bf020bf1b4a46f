package peersvc

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	bolt "go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/internal/svcfuzz"
	"github.com/quicproquo/qpq/rpc"
	"github.com/quicproquo/qpq/rpc/twoparty"
	"github.com/quicproquo/qpq/schema"
)

// FuzzService sends a node's P2P NodeService calls of every method whose
// parameters are raw bytes (package svcfuzz), from an authenticated peer,
// over the two-party RPC connection the P2P link uses. Anyone on the LAN
// can be that peer. Every answer must be results or an error with a
// stable code other than internal, within a bounded time, with nothing
// logged as the node's failure; the node must go on answering.
func FuzzService(f *testing.F) {
	self, _, _ := ed25519.GenerateKey(rand.Reader)
	caller, _, _ := ed25519.GenerateKey(rand.Reader)
	db, err := bolt.Open(filepath.Join(f.TempDir(), "node.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	st, err := NewStore(db)
	if err != nil {
		f.Fatal(err)
	}
	if err := st.SetHybridKey(bytes.Repeat([]byte{7}, HybridKeySize)); err != nil {
		f.Fatal(err)
	}
	if err := st.AddKeyPackages([]byte("kp1"), []byte("kp2")); err != nil {
		f.Fatal(err)
	}
	if err := st.SetLastResortKeyPackage([]byte("last resort")); err != nil {
		f.Fatal(err)
	}
	logs := &svcfuzz.ErrorLog{}
	svc, err := New(st, Config{Identity: self, Username: "alice", Logger: slog.New(logs)})
	if err != nil {
		f.Fatal(err)
	}

	ctx := context.Background()
	seeds := svcfuzz.Record(f, func(c capnp.Client) {
		cl := rpc.NewClient(schema.NodeService(c.AddRef()))
		s, other := []byte(self), []byte(caller)
		cl.Health(ctx)
		cl.FetchKeyPackage(ctx, s)
		cl.FetchHybridKey(ctx, s)
		cl.FetchHybridKeys(ctx, [][]byte{s, other})
		cl.ResolveUser(ctx, "alice")
		cl.ResolveIdentity(ctx, s)
		cl.Enqueue(ctx, s, nil, []byte("hello"))
		cl.BatchEnqueue(ctx, [][]byte{s, s}, nil, []byte("hello"))
		cl.CreateChannel(ctx, s)
		cl.Fetch(ctx, s, nil, 0) // not offered over the P2P link
		cl.Raw().Release()
	})

	fz := svcfuzz.Service{
		InterfaceID: schema.NodeService_TypeID,
		Methods:     23,
		Serve: func(stream io.ReadWriteCloser) {
			conn := twoparty.NewConn(stream, twoparty.Options{Bootstrap: svc.Client(caller)})
			<-conn.Done()
		},
		Log:    logs,
		Health: seeds[0],
	}
	fz.CheckSeeds(f, seeds, func(a svcfuzz.Answer) bool { return a.Method == 3 }) // fetch: not offered here
	f.Fuzz(fz.Check)
}
