package relay

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"go.uber.org/goleak"

	"github.com/quicproquo/qpq/internal/chanid"
	"github.com/quicproquo/qpq/mls"
	"github.com/quicproquo/qpq/mls/cipher"
	"github.com/quicproquo/qpq/mls/codec"
	"github.com/quicproquo/qpq/rpc"
	"github.com/quicproquo/qpq/rpc/errcode"
)

func TestKeyPackages(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		s := startServer(t, Config{Limits: Limits{MaxKeyPackage: 1000, MaxKeyPackages: 40}})
		alice, bob := s.newUser("alice"), s.newUser("bob")

		_, err := alice.c.UploadKeyPackage(bg, bob.id, []byte("kp"))
		wantCode(t, "upload for another identity", err, errcode.PermissionDenied)
		_, err = alice.c.UploadKeyPackage(bg, alice.id, nil)
		wantCode(t, "empty package", err, errcode.InvalidArgument)
		_, err = alice.c.UploadKeyPackage(bg, alice.id, make([]byte, 1001))
		wantCode(t, "package over the size limit", err, errcode.ResourceExhausted)

		if got, err := bob.c.FetchKeyPackage(bg, alice.id); err != nil || got != nil {
			t.Fatalf("fetch with none stored = %v, %v", got, err)
		}
		for i := range 40 {
			pkg := []byte(fmt.Sprint("kp", i))
			fp, err := alice.c.UploadKeyPackage(bg, alice.id, pkg)
			if sum := sha256.Sum256(pkg); err != nil || !bytes.Equal(fp, sum[:]) {
				t.Fatalf("fingerprint = %x, %v; want SHA-256 %x", fp, err, sum)
			}
		}
		_, err = alice.c.UploadKeyPackage(bg, alice.id, []byte("41st"))
		wantCode(t, "package beyond the count limit", err, errcode.ResourceExhausted)
		if got, _ := bob.c.FetchKeyPackage(bg, alice.id); string(got) != "kp0" {
			t.Fatalf("first fetch = %q, want the oldest", got)
		}

		// Concurrent fetches from several connections never share a package.
		var mu sync.Mutex
		seen := map[string]int{}
		var wg sync.WaitGroup
		for i := range 6 {
			u := s.newUser(fmt.Sprint("fetcher", i))
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 8 {
					pkg, err := u.c.FetchKeyPackage(bg, alice.id)
					if err != nil {
						t.Error(err)
						return
					}
					if pkg != nil {
						mu.Lock()
						seen[string(pkg)]++
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		if len(seen) != 39 {
			t.Fatalf("%d distinct packages fetched, want 39", len(seen))
		}
		for p, n := range seen {
			if n != 1 {
				t.Fatalf("package %q fetched %d times", p, n)
			}
		}
	})
}

// kpOf makes an MLS KeyPackage of priv's identity, with the last_resort
// extension if last, TLS-encoded (or framed as an MLSMessage).
func kpOf(t testing.TB, priv ed25519.PrivateKey, last, framed bool) []byte {
	t.Helper()
	signer, cred, err := mls.Ed25519Identity(priv)
	if err != nil {
		t.Fatal(err)
	}
	var ext mls.Extensions
	if last {
		ext = mls.Extensions{mls.LastResort()}
	}
	b, err := mls.NewKeyPackage(mls.CipherSuite(cipher.X25519_AES128GCM_SHA256_Ed25519), signer, cred, mls.LeafOptions{}, ext)
	if err != nil {
		t.Fatal(err)
	}
	if framed {
		return codec.Marshal(&mls.MLSMessage{Version: mls.MLS10, WireFormat: mls.WireFormatKeyPackage, KeyPackage: b.KeyPackage})
	}
	return codec.Marshal(b.KeyPackage)
}

// A last-resort KeyPackage is kept apart from the stock: fetches drain the
// stock first, then get the last-resort one every time, without removing
// it; a newer one replaces it; one that is not the uploader's, or not a
// valid KeyPackage, is refused.
func TestLastResortKeyPackage(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		s := startServer(t, Config{})
		alice, bob := s.newUser("alice"), s.newUser("bob")
		if got := must[[]byte](t)(bob.c.FetchKeyPackage(bg, alice.id)); got != nil {
			t.Fatalf("fetch with nothing stored = %x", got)
		}
		last1 := kpOf(t, alice.priv, true, false)
		if _, err := alice.c.UploadKeyPackage(bg, alice.id, last1); err != nil {
			t.Fatal(err)
		}
		ordinary := [][]byte{kpOf(t, alice.priv, false, false), []byte("opaque, not MLS")}
		for _, kp := range ordinary {
			if _, err := alice.c.UploadKeyPackage(bg, alice.id, kp); err != nil {
				t.Fatal(err)
			}
		}
		for i, want := range append(ordinary, last1, last1, last1) {
			if got := must[[]byte](t)(bob.c.FetchKeyPackage(bg, alice.id)); !bytes.Equal(got, want) {
				t.Fatalf("fetch %d: got %d bytes, want package of %d", i, len(got), len(want))
			}
		}
		last2 := kpOf(t, alice.priv, true, true) // framed: also recognised
		if _, err := alice.c.UploadKeyPackage(bg, alice.id, last2); err != nil {
			t.Fatal(err)
		}
		if got := must[[]byte](t)(bob.c.FetchKeyPackage(bg, alice.id)); !bytes.Equal(got, last2) {
			t.Fatal("the newer last-resort package did not replace the older")
		}
		fresh := kpOf(t, alice.priv, false, false)
		must[[]byte](t)(alice.c.UploadKeyPackage(bg, alice.id, fresh))
		if got := must[[]byte](t)(bob.c.FetchKeyPackage(bg, alice.id)); !bytes.Equal(got, fresh) {
			t.Fatal("a refilled stock is not served before the last-resort package")
		}

		_, err := alice.c.UploadKeyPackage(bg, alice.id, kpOf(t, bob.priv, true, false))
		wantCode(t, "bob's last-resort package uploaded by alice", err, errcode.InvalidArgument)
		bad := kpOf(t, alice.priv, true, false)
		bad[len(bad)-1] ^= 1 // the signature
		_, err = alice.c.UploadKeyPackage(bg, alice.id, bad)
		wantCode(t, "a last-resort package with a bad signature", err, errcode.InvalidArgument)
		if got := must[[]byte](t)(bob.c.FetchKeyPackage(bg, alice.id)); !bytes.Equal(got, last2) {
			t.Fatal("a refused upload changed the last-resort package")
		}
	})
}

// serverInfo needs no login: the domain, and the relay's address when
// the server has one.
func TestServerInfo(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		plain := startServer(t, Config{Domain: "a.test"})
		domain, rec, err := plain.dial().ServerInfo(bg)
		if err != nil || domain != "a.test" || rec != nil {
			t.Fatalf("without a relay: %q, %q, %v", domain, rec, err)
		}
		relayed := startServer(t, Config{P2PAddr: func() []byte { return []byte(`{"ID":"x","Addrs":[]}`) }})
		domain, rec, err = relayed.dial().ServerInfo(bg)
		if err != nil || domain != "" || string(rec) != `{"ID":"x","Addrs":[]}` {
			t.Fatalf("with a relay: %q, %q, %v", domain, rec, err)
		}
	})
}

func hybridKey(t testing.TB) []byte {
	k, err := hpke.MLKEM768X25519().GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey().Bytes()
}

func TestHybridKeys(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		s := startServer(t, Config{Limits: Limits{MaxHybridKeys: 3}})
		alice, bob := s.newUser("alice"), s.newUser("bob")
		ka, kb := hybridKey(t), hybridKey(t)
		if len(ka) != HybridKeySize {
			t.Fatalf("X-Wing key of %d bytes", len(ka))
		}
		wantCode(t, "upload for another identity", alice.c.UploadHybridKey(bg, bob.id, ka), errcode.PermissionDenied)
		wantCode(t, "short key", alice.c.UploadHybridKey(bg, alice.id, ka[:1215]), errcode.InvalidArgument)
		wantCode(t, "key that does not parse", alice.c.UploadHybridKey(bg, alice.id, bytes.Repeat([]byte{0xff}, HybridKeySize)), errcode.InvalidArgument)
		if err := alice.c.UploadHybridKey(bg, alice.id, ka); err != nil {
			t.Fatal(err)
		}
		if err := bob.c.UploadHybridKey(bg, bob.id, kb); err != nil {
			t.Fatal(err)
		}
		if got, err := bob.c.FetchHybridKey(bg, alice.id); err != nil || !bytes.Equal(got, ka) {
			t.Fatalf("fetchHybridKey = %d bytes, %v", len(got), err)
		}
		if got, err := bob.c.FetchHybridKey(bg, randKey()); err != nil || got != nil {
			t.Fatalf("unknown identity = %v, %v", got, err)
		}
		got, err := alice.c.FetchHybridKeys(bg, [][]byte{bob.id, randKey(), alice.id})
		if err != nil || len(got) != 3 || !bytes.Equal(got[0], kb) || got[1] != nil || !bytes.Equal(got[2], ka) {
			t.Fatalf("fetchHybridKeys = %d keys, %v", len(got), err)
		}
		_, err = alice.c.FetchHybridKeys(bg, [][]byte{bob.id, bob.id, bob.id, bob.id})
		wantCode(t, "more identities than the limit", err, errcode.ResourceExhausted)
		_, err = alice.c.FetchHybridKeys(bg, [][]byte{bob.id, {1}})
		wantCode(t, "a short identity", err, errcode.InvalidArgument)
	})
}

func TestCreateChannel(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		s := startServer(t, Config{})
		alice, bob := s.newUser("alice"), s.newUser("bob")
		_, _, err := alice.c.CreateChannel(bg, alice.id)
		wantCode(t, "channel with oneself", err, errcode.InvalidArgument)

		// Both sides at the same instant (twice each, on two connections
		// per side), many times over: exactly one wasNew.
		for round := range 20 {
			peerA, peerB := s.newUser(fmt.Sprint("pa", round)), s.newUser(fmt.Sprint("pb", round))
			peerA2, peerB2 := s.dial(), s.dial()
			peerA2.SetToken(peerA.c.Token())
			peerB2.SetToken(peerB.c.Token())
			callers := []struct {
				c    *rpc.Client
				peer []byte
			}{{peerA.c, peerB.id}, {peerB.c, peerA.id}, {peerA2, peerB.id}, {peerB2, peerA.id}}
			type result struct {
				id     []byte
				wasNew bool
			}
			res := make([]result, 4)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range 4 {
				c := callers[i]
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					id, wasNew, err := c.c.CreateChannel(bg, c.peer)
					if err != nil {
						t.Error(err)
					}
					res[i] = result{id, wasNew}
				}()
			}
			close(start)
			wg.Wait()
			want := chanid.Derive(peerA.id, peerB.id)
			nNew := 0
			for _, r := range res {
				if !bytes.Equal(r.id, want[:]) {
					t.Fatalf("round %d: channel id %x, want chanid.Derive %x", round, r.id, want)
				}
				if r.wasNew {
					nNew++
				}
			}
			if nNew != 1 {
				t.Fatalf("round %d: %d callers got wasNew=true", round, nNew)
			}
		}
		id1, new1, _ := alice.c.CreateChannel(bg, bob.id)
		id2, new2, _ := bob.c.CreateChannel(bg, alice.id)
		if !new1 || new2 || !bytes.Equal(id1, id2) || len(id1) != 16 {
			t.Fatalf("sequential: %x %v / %x %v", id1, new1, id2, new2)
		}
	})
}

func TestResolve(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		s := startServer(t, Config{})
		alice, bob := s.newUser("alice"), s.newUser("bob")
		if id, err := bob.c.ResolveUser(bg, "alice"); err != nil || !bytes.Equal(id, alice.id) {
			t.Fatalf("resolveUser = %x, %v", id, err)
		}
		if id, err := bob.c.ResolveUser(bg, "nobody"); err != nil || id != nil {
			t.Fatalf("unknown user = %x, %v", id, err)
		}
		_, err := bob.c.ResolveUser(bg, "bad\nname")
		wantCode(t, "malformed username", err, errcode.InvalidArgument)
		if name, err := alice.c.ResolveIdentity(bg, bob.id); err != nil || name != "bob" {
			t.Fatalf("resolveIdentity = %q, %v", name, err)
		}
		if name, err := alice.c.ResolveIdentity(bg, randKey()); err != nil || name != "" {
			t.Fatalf("unknown identity = %q, %v", name, err)
		}
	})
}

// addrInfo returns the JSON a node publishes: libp2p's own encoding of its
// peer.AddrInfo.
func addrInfo(t *testing.T, priv ed25519.PrivateKey, addrs ...string) []byte {
	t.Helper()
	sk, err := crypto.UnmarshalEd25519PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(sk)
	if err != nil {
		t.Fatal(err)
	}
	info := peer.AddrInfo{ID: id}
	for _, a := range addrs {
		info.Addrs = append(info.Addrs, ma.StringCast(a))
	}
	b, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEndpoints(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		s := startServer(t, Config{EndpointMaxAge: time.Hour})
		alice, bob := s.newUser("alice"), s.newUser("bob")
		mine := addrInfo(t, alice.priv, "/ip4/192.0.2.1/udp/4001/quic-v1")
		wantCode(t, "publish for another identity", alice.c.PublishEndpoint(bg, bob.id, mine), errcode.PermissionDenied)
		wantCode(t, "someone else's peer id", alice.c.PublishEndpoint(bg, alice.id, addrInfo(t, bob.priv)), errcode.InvalidArgument)
		wantCode(t, "not JSON", alice.c.PublishEndpoint(bg, alice.id, []byte("/ip4/1.2.3.4")), errcode.InvalidArgument)
		wantCode(t, "bad multiaddr", alice.c.PublishEndpoint(bg, alice.id, bytes.Replace(mine, []byte("/ip4/"), []byte("/nope/"), 1)), errcode.InvalidArgument)
		wantCode(t, "over the size limit", alice.c.PublishEndpoint(bg, alice.id, make([]byte, DefaultMaxEndpoint+1)), errcode.ResourceExhausted)

		if got, err := bob.c.ResolveEndpoint(bg, alice.id); err != nil || got != nil {
			t.Fatalf("before publishing = %q, %v", got, err)
		}
		if err := alice.c.PublishEndpoint(bg, alice.id, mine); err != nil {
			t.Fatal(err)
		}
		if got, err := bob.c.ResolveEndpoint(bg, alice.id); err != nil || !bytes.Equal(got, mine) {
			t.Fatalf("resolveEndpoint = %q, %v", got, err)
		}
		s.clock.add(time.Hour)
		if got, err := bob.c.ResolveEndpoint(bg, alice.id); err != nil || got != nil {
			t.Fatalf("endpoint older than EndpointMaxAge = %q, %v", got, err)
		}
	})
}

func FuzzCheckEndpoint(f *testing.F) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	sk, _ := crypto.UnmarshalEd25519PrivateKey(priv)
	id, _ := peer.IDFromPrivateKey(sk)
	good, _ := json.Marshal(peer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/udp/1/quic-v1")}})
	f.Add(good)
	f.Add([]byte(`{"ID":"","Addrs":null}`))
	f.Add([]byte(`{"Addrs":["/ip6/::1/udp/1/quic-v1"]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		err := CheckEndpoint([32]byte(pub), b)
		if err != nil && errcode.Of(err) != errcode.InvalidArgument {
			t.Fatalf("%q: %v", b, err)
		}
	})
}

func FuzzCheckHybridKey(f *testing.F) {
	k, _ := hpke.MLKEM768X25519().GenerateKey()
	f.Add(k.PublicKey().Bytes())
	f.Add(make([]byte, HybridKeySize))
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := CheckHybridKey(b); err != nil && errcode.Of(err) != errcode.InvalidArgument {
			t.Fatalf("%v", err)
		}
	})
}

func FuzzIsLastResort(f *testing.F) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	for _, last := range []bool{false, true} {
		for _, framed := range []bool{false, true} {
			f.Add(kpOf(f, priv, last, framed))
		}
	}
	f.Add([]byte("kp"))
	f.Fuzz(func(t *testing.T, b []byte) {
		last, err := isLastResort([32]byte(pub), b)
		if err != nil && (last || errcode.Of(err) != errcode.InvalidArgument) {
			t.Fatalf("%v, %v", last, err)
		}
	})
}
