package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/internal/svcfuzz"
	"github.com/quicproquo/qpq/relay/auth"
	"github.com/quicproquo/qpq/relay/store"
	"github.com/quicproquo/qpq/rpc"
	"github.com/quicproquo/qpq/schema"
)

// FuzzService sends the home server calls of every NodeService method
// whose parameters are raw bytes (package svcfuzz), over the two-party
// RPC connection and with the token authentication of a real client
// connection. Every answer must be results or an error with a stable
// code other than internal, within a bounded time, with nothing logged
// as the server's failure; the server must go on answering.
func FuzzService(f *testing.F) {
	logs := &svcfuzz.ErrorLog{}
	r, err := Open(Config{
		DataDir:      f.TempDir(),
		Rates:        RateLimits{Off: true},
		MaxFetchWait: 50 * time.Millisecond, // fetchWait with any timeout ends quickly
		Logger:       slog.New(logs),
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { r.Close() })

	// alice is the caller; bob another user with a channel to her.
	alicePub, alicePriv, _ := ed25519.GenerateKey(rand.Reader)
	bobPub, _, _ := ed25519.GenerateKey(rand.Reader)
	alice, bob := store.Key(alicePub), store.Key(bobPub)
	for name, k := range map[string]store.Key{"alice": alice, "bob": bob} {
		if err := r.st.CreateUser(name, store.User{Identity: k, Record: bytes.Repeat([]byte{1}, 192)}); err != nil {
			f.Fatal(err)
		}
	}
	token, err := r.accounts.IssueToken(alice)
	if err != nil {
		f.Fatal(err)
	}
	channel, _, err := r.st.CreateChannel(alice, bob)
	if err != nil {
		f.Fatal(err)
	}

	alicePeer, err := PeerID(alice)
	if err != nil {
		f.Fatal(err)
	}

	// Seeds carry a placeholder where the token goes: tokens are random
	// per run, and a corpus entry must reach past authentication.
	placeholder := bytes.Repeat([]byte{0xa5}, auth.TokenSize)
	ctx := context.Background()
	seeds := svcfuzz.Record(f, func(c capnp.Client) {
		cl := rpc.NewClient(schema.NodeService(c.AddRef()))
		cl.SetToken(placeholder)
		a, b, ch := alice[:], bob[:], channel[:]
		cl.Health(ctx)
		cl.ServerInfo(ctx)
		cl.UploadKeyPackage(ctx, a, kpOf(f, alicePriv, false, false))
		cl.FetchKeyPackage(ctx, b)
		cl.Enqueue(ctx, b, nil, []byte("hello"))
		cl.Enqueue(ctx, b, ch, []byte("hello"))
		cl.BatchEnqueue(ctx, [][]byte{a, b}, nil, []byte("hello"))
		cl.Fetch(ctx, a, nil, 0)
		cl.FetchWait(ctx, a, ch, time.Millisecond, 5)
		cl.Peek(ctx, a, nil, 2)
		cl.PeekWait(ctx, a, nil, time.Millisecond, 0)
		cl.Ack(ctx, a, nil, 3)
		cl.UploadHybridKey(ctx, a, hybridKey(f))
		cl.FetchHybridKey(ctx, b)
		cl.FetchHybridKeys(ctx, [][]byte{a, b})
		cl.CreateChannel(ctx, b)
		cl.ResolveUser(ctx, "bob")
		cl.ResolveIdentity(ctx, b)
		cl.PublishEndpoint(ctx, a, []byte(`{"ID":"`+alicePeer.String()+`","Addrs":["/ip4/10.0.0.1/udp/4001/quic-v1"]}`))
		cl.ResolveEndpoint(ctx, b)
		cl.OpaqueRegisterStart(ctx, "carol", make([]byte, 32))
		cl.OpaqueRegisterFinish(ctx, "carol", make([]byte, 192), a)
		cl.OpaqueLoginStart(ctx, "bob", make([]byte, 96))
		cl.OpaqueLoginFinish(ctx, "bob", make([]byte, 64), a)
		cl.Raw().Release()
	})

	withToken := func(in []byte) []byte { return bytes.ReplaceAll(in, placeholder, token) }
	svc := svcfuzz.Service{
		InterfaceID: schema.NodeService_TypeID,
		Methods:     23,
		Serve: func(st io.ReadWriteCloser) {
			rpc.ServeStream(ctx, st, r.NewService(ServiceOptions{Auth: r.TokenAuthenticator(), Accounts: true}), rpc.ServeOptions{})
		},
		Log:    logs,
		Health: withToken(seeds[0]),
	}
	// The OPAQUE seeds carry dummy messages, and each call has a
	// connection of its own, so they fail later than decoding.
	var authed [][]byte
	for _, s := range seeds {
		authed = append(authed, withToken(s))
	}
	svc.CheckSeeds(f, authed, func(a svcfuzz.Answer) bool { return a.Method >= 8 && a.Method <= 11 })
	f.Fuzz(func(t *testing.T, in []byte) { svc.Check(t, withToken(in)) })
}
