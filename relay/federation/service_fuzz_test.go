package federation_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	"testing"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/internal/svcfuzz"
	"github.com/quicproquo/qpq/relay"
	"github.com/quicproquo/qpq/relay/federation"
	"github.com/quicproquo/qpq/relay/federation/fedtest"
	"github.com/quicproquo/qpq/relay/store"
	"github.com/quicproquo/qpq/rpc"
	"github.com/quicproquo/qpq/schema/fedschema"
)

// FuzzService sends a home server FederationService calls of every
// method whose parameters are raw bytes (package svcfuzz), from a pinned
// peer server, over the two-party RPC connection federation uses. Every
// answer must be results or an error with a stable code other than
// internal, within a bounded time, with nothing logged as the server's
// failure; the server must go on answering.
func FuzzService(f *testing.F) {
	a, b := fedtest.NewHome(f, "a.test"), fedtest.NewHome(f, "b.test")
	logs := &svcfuzz.ErrorLog{}
	r, err := relay.Open(relay.Config{DataDir: a.Dir, Domain: a.Domain, Logger: slog.New(logs),
		Federation: &federation.Config{Certificate: a.Cert, Peers: fedtest.Peers(b), RateOff: true}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { r.Close() })
	alicePub, _, _ := ed25519.GenerateKey(rand.Reader)
	alice := store.Key(alicePub)
	if err := r.Store().CreateUser("alice", store.User{Identity: alice, Record: bytes.Repeat([]byte{1}, 192)}); err != nil {
		f.Fatal(err)
	}
	bob := key(0xff) // a user of b.test, above alice: her server decides their channel

	ctx := context.Background()
	text := func(set func(string) error, v string) { must(f, set(v)) }
	data := func(set func([]byte) error, v []byte) { must(f, set(v)) }
	stream := bytes.Repeat([]byte{0x5e}, 16)
	seeds := svcfuzz.Record(f, func(c capnp.Client) {
		fs := fedschema.FederationService(c.AddRef())
		defer fs.Release()
		_, release := fs.RelayEnqueue(ctx, func(p fedschema.FederationService_relayEnqueue_Params) error {
			text(p.SetOrigin, "b.test")
			p.SetHops(1)
			id, err := p.NewRelay()
			must(f, err)
			data(id.SetStream, stream)
			id.SetSeq(1)
			data(p.SetSenderKey, bob[:])
			data(p.SetRecipientKey, alice[:])
			data(p.SetPayload, []byte("hello"))
			return nil
		})
		release()
		_, release = fs.RelayBatchEnqueue(ctx, func(p fedschema.FederationService_relayBatchEnqueue_Params) error {
			text(p.SetOrigin, "b.test")
			p.SetHops(1)
			id, err := p.NewRelay()
			must(f, err)
			data(id.SetStream, stream)
			id.SetSeq(2)
			data(p.SetSenderKey, bob[:])
			l, err := p.NewRecipientKeys(2)
			must(f, err)
			must(f, l.Set(0, alice[:]))
			must(f, l.Set(1, alice[:]))
			data(p.SetPayload, []byte("hello"))
			return nil
		})
		release()
		_, release = fs.ProxyFetchKeyPackage(ctx, func(p fedschema.FederationService_proxyFetchKeyPackage_Params) error {
			text(p.SetOrigin, "b.test")
			p.SetHops(1)
			data(p.SetIdentityKey, alice[:])
			return nil
		})
		release()
		_, release = fs.ProxyFetchHybridKey(ctx, func(p fedschema.FederationService_proxyFetchHybridKey_Params) error {
			text(p.SetOrigin, "b.test")
			p.SetHops(1)
			data(p.SetIdentityKey, alice[:])
			return nil
		})
		release()
		_, release = fs.ProxyResolveUser(ctx, func(p fedschema.FederationService_proxyResolveUser_Params) error {
			text(p.SetOrigin, "b.test")
			p.SetHops(1)
			text(p.SetUsername, "alice")
			return nil
		})
		release()
		_, release = fs.ProxyCreateChannel(ctx, func(p fedschema.FederationService_proxyCreateChannel_Params) error {
			text(p.SetOrigin, "b.test")
			p.SetHops(1)
			data(p.SetCallerKey, bob[:])
			data(p.SetPeerKey, alice[:])
			return nil
		})
		release()
		_, release = fs.Health(ctx, func(p fedschema.FederationService_health_Params) error {
			text(p.SetOrigin, "b.test")
			return nil
		})
		release()
		_, release = fs.ProxyResolveIdentity(ctx, func(p fedschema.FederationService_proxyResolveIdentity_Params) error {
			text(p.SetOrigin, "b.test")
			p.SetHops(1)
			data(p.SetIdentityKey, alice[:])
			return nil
		})
		release()
	})

	fz := svcfuzz.Service{
		InterfaceID: fedschema.FederationService_TypeID,
		Methods:     8,
		Serve: func(st io.ReadWriteCloser) {
			rpc.ServeHook(ctx, st, federation.ServiceHook(r.Federation(), b.Domain), rpc.ServeOptions{})
		},
		Log:    logs,
		Health: seeds[6],
	}
	fz.CheckSeeds(f, seeds, nil)
	f.Fuzz(fz.Check)
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}
