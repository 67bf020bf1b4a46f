package keys

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/mls"
)

func newStock(t testing.TB) (*Stock, ed25519.PrivateKey, *bolt.DB) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "node.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	s, err := New(db, priv, []mls.ExtensionType{0xf0a1})
	if err != nil {
		t.Fatal(err)
	}
	return s, priv, db
}

// TestWelcomeFindsAndConsumesBundle: a KeyPackage made here and added to a
// group by someone else yields a Welcome that ForWelcome opens; once
// consumed, a second copy of the Welcome finds nothing.
func TestWelcomeFindsAndConsumesBundle(t *testing.T) {
	s, priv, db := newStock(t)
	kps, err := s.Make(PlaceServer, 3)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Count(PlaceServer); n != 3 {
		t.Fatalf("Count(server) = %d, want 3", n)
	}
	if n, _ := s.Count(PlacePeers); n != 0 {
		t.Fatalf("Count(peers) = %d, want 0", n)
	}
	kp, err := ParsePeerKeyPackage(kps[1], priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}

	_, other, _ := ed25519.GenerateKey(rand.Reader)
	signer, cred, _ := mls.Ed25519Identity(other)
	g, err := mls.NewGroup(Suite, []byte("group-id-16bytes"), signer, cred, mls.LeafOptions{ExtensionTypes: []mls.ExtensionType{0xf0a1}}, nil, mls.Config{})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := g.Commit(mls.CommitOptions{Proposals: []mls.Proposal{&mls.AddProposal{KeyPackage: *kp}}, RatchetTreeInWelcome: true})
	if err != nil {
		t.Fatal(err)
	}
	b, ref, place, ok, err := s.ForWelcome(pc.Welcome)
	if err != nil || !ok || place != PlaceServer {
		t.Fatalf("ForWelcome: ok %v, place %d, err %v", ok, place, err)
	}
	if _, err := mls.JoinWelcome(pc.Welcome, b, nil, mls.Config{}); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return s.ConsumeTx(tx, ref) }); err != nil {
		t.Fatal(err)
	}
	if _, _, _, ok, err := s.ForWelcome(pc.Welcome); ok || err != nil {
		t.Fatalf("consumed bundle found again: ok %v, err %v", ok, err)
	}
	if n, _ := s.Count(PlaceServer); n != 2 {
		t.Fatalf("Count(server) = %d after a join, want 2", n)
	}
}

func TestParsePeerKeyPackageRejects(t *testing.T) {
	s, priv, _ := newStock(t)
	kps, err := s.Make(PlacePeers, 1)
	if err != nil {
		t.Fatal(err)
	}
	stranger := make([]byte, ed25519.PublicKeySize)
	if _, err := ParsePeerKeyPackage(kps[0], stranger); !errors.Is(err, ErrWrongIdentity) {
		t.Fatalf("someone else's package: %v, want ErrWrongIdentity", err)
	}
	bad := append([]byte(nil), kps[0]...)
	bad[len(bad)-1] ^= 1 // signature
	if _, err := ParsePeerKeyPackage(bad, priv.Public().(ed25519.PublicKey)); err == nil {
		t.Fatal("tampered package accepted")
	}
	for _, in := range [][]byte{nil, {1, 2, 3}, make([]byte, MaxKeyPackageSize+1)} {
		if _, err := ParsePeerKeyPackage(in, stranger); err == nil {
			t.Fatalf("%d bytes of garbage accepted", len(in))
		}
	}
}

func FuzzParsePeerKeyPackage(f *testing.F) {
	s, priv, _ := newStock(f)
	kps, _ := s.Make(PlacePeers, 1)
	id := priv.Public().(ed25519.PublicKey)
	f.Add(kps[0])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		ParsePeerKeyPackage(data, id)
	})
}

// TestLastResortStays: a last-resort package joins any number of groups;
// its bundle is never consumed.
func TestLastResortStays(t *testing.T) {
	s, priv, db := newStock(t)
	kps, err := s.Make(PlaceLastResort, 1)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ParsePeerKeyPackage(kps[0], priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if !kp.Extensions.Has(mls.ExtensionTypeLastResort) {
		t.Fatal("no last_resort extension")
	}
	for i := range 2 {
		_, other, _ := ed25519.GenerateKey(rand.Reader)
		signer, cred, _ := mls.Ed25519Identity(other)
		g, err := mls.NewGroup(Suite, []byte{byte(i), 1, 2, 3}, signer, cred, mls.LeafOptions{ExtensionTypes: []mls.ExtensionType{0xf0a1}}, nil, mls.Config{})
		if err != nil {
			t.Fatal(err)
		}
		pc, err := g.Commit(mls.CommitOptions{Proposals: []mls.Proposal{&mls.AddProposal{KeyPackage: *kp}}, RatchetTreeInWelcome: true})
		if err != nil {
			t.Fatal(err)
		}
		b, ref, place, ok, err := s.ForWelcome(pc.Welcome)
		if err != nil || !ok || place != PlaceLastResort {
			t.Fatalf("join %d: ok %v, place %d, err %v", i, ok, place, err)
		}
		if _, err := mls.JoinWelcome(pc.Welcome, b, nil, mls.Config{}); err != nil {
			t.Fatal(err)
		}
		if err := db.Update(func(tx *bolt.Tx) error { return s.ConsumeTx(tx, ref) }); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := s.Count(PlaceLastResort); n != 1 {
		t.Fatalf("%d last-resort bundles, want 1", n)
	}
}
