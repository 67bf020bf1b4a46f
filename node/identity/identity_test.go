//go:build unix

package identity

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/quicproquo/qpq/seal"
)

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestCreateThenLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "alice")
	id, created, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Fatal("first run did not report created")
	}
	if m := mode(t, dir); m != DirMode {
		t.Fatalf("data dir mode %04o, want %04o", m, DirMode)
	}
	for _, name := range []string{IdentityFile, HybridFile} {
		p := filepath.Join(dir, name)
		if m := mode(t, p); m != FileMode {
			t.Fatalf("%s mode %04o, want %04o", name, m, FileMode)
		}
		fi, _ := os.Stat(p)
		if fi.Size() != 32 {
			t.Fatalf("%s is %d bytes", name, fi.Size())
		}
	}
	// No temporary files are left behind.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			t.Fatalf("left behind %s", e.Name())
		}
	}

	again, created, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if created {
		t.Fatal("second run created new keys")
	}
	if !bytes.Equal(again.PublicKey(), id.PublicKey()) || !again.Hybrid().Public().Equal(id.Hybrid().Public()) {
		t.Fatal("reloaded keys differ")
	}
	loaded, err := Load(dir)
	if err != nil || loaded.Hex() != id.Hex() {
		t.Fatalf("Load: %v", err)
	}
}

func TestAccessors(t *testing.T) {
	id, _, err := LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pub := id.PublicKey()
	if len(pub) != ed25519.PublicKeySize {
		t.Fatalf("public key is %d bytes", len(pub))
	}
	if id.Hex() != hex.EncodeToString(pub) || len(id.Hex()) != 64 {
		t.Fatalf("Hex = %q", id.Hex())
	}
	priv := id.PrivateKey()
	if len(priv) != ed25519.PrivateKeySize || !bytes.Equal(priv.Public().(ed25519.PublicKey), pub) {
		t.Fatal("private key does not match the public key")
	}
	msg := []byte("mls leaf")
	if !ed25519.Verify(pub, msg, ed25519.Sign(priv, msg)) {
		t.Fatal("signature does not verify")
	}
	// Accessors return copies.
	pub[0] ^= 1
	priv[0] ^= 1
	if bytes.Equal(id.PublicKey(), pub) || bytes.Equal(id.PrivateKey(), priv) {
		t.Fatal("accessors expose internal state")
	}
	// The hybrid key opens what is sealed to its public half.
	s, err := seal.Seal(id.Hybrid().Public(), []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := seal.Open(id.Hybrid(), s); err != nil || string(pt) != "x" {
		t.Fatalf("open: %v", err)
	}
}

// TestLibp2pPeerID proves the p2p host can use the raw private key and gets
// the peer ID that peers derive from our identity public key.
func TestLibp2pPeerID(t *testing.T) {
	id, _, err := LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sk, err := crypto.UnmarshalEd25519PrivateKey(id.PrivateKey())
	if err != nil {
		t.Fatal(err)
	}
	fromPriv, err := peer.IDFromPrivateKey(sk)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := crypto.UnmarshalEd25519PublicKey(id.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	fromPub, err := peer.IDFromPublicKey(pk)
	if err != nil {
		t.Fatal(err)
	}
	if fromPriv != fromPub {
		t.Fatalf("peer IDs differ: %s vs %s", fromPriv, fromPub)
	}
	raw, err := sk.GetPublic().Raw()
	if err != nil || !bytes.Equal(raw, id.PublicKey()) {
		t.Fatal("libp2p public key differs from the identity key")
	}
}

func TestRefusesOpenPermissions(t *testing.T) {
	for _, file := range []string{IdentityFile, HybridFile} {
		for _, m := range []fs.FileMode{0o640, 0o604, 0o660, 0o644, 0o610} {
			dir := t.TempDir()
			if _, _, err := LoadOrCreate(dir); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, file)
			if err := os.Chmod(p, m); err != nil {
				t.Fatal(err)
			}
			_, _, err := LoadOrCreate(dir)
			if !errors.Is(err, ErrPermissions) {
				t.Fatalf("%s mode %04o: err = %v, want ErrPermissions", file, m, err)
			}
			if !strings.Contains(err.Error(), "chmod 600 "+p) {
				t.Fatalf("error does not say what to do: %v", err)
			}
			// The file is left as it was: refusing never destroys a key.
			if mode(t, p) != m {
				t.Fatal("mode changed")
			}
			if err := os.Chmod(p, 0o400); err != nil {
				t.Fatal(err)
			}
			if _, _, err := LoadOrCreate(dir); err != nil {
				t.Fatalf("owner-only read mode refused: %v", err)
			}
		}
	}
}

func TestRefusesWrongSize(t *testing.T) {
	for _, file := range []string{IdentityFile, HybridFile} {
		for _, n := range []int{0, 31, 33, 64} {
			dir := t.TempDir()
			if _, _, err := LoadOrCreate(dir); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, file)
			if err := os.WriteFile(p, make([]byte, n), FileMode); err != nil {
				t.Fatal(err)
			}
			_, _, err := LoadOrCreate(dir)
			if !errors.Is(err, ErrKeySize) {
				t.Fatalf("%s of %d bytes: err = %v, want ErrKeySize", file, n, err)
			}
			if !strings.Contains(err.Error(), "restore it from a backup") {
				t.Fatalf("error does not say what to do: %v", err)
			}
			// The damaged file is not replaced by a new key.
			if b, _ := os.ReadFile(p); len(b) != n {
				t.Fatal("damaged key file was rewritten")
			}
		}
	}
}

func TestRefusesMissingHybrid(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := LoadOrCreate(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, HybridFile)); err != nil {
		t.Fatal(err)
	}
	_, created, err := LoadOrCreate(dir)
	if !errors.Is(err, ErrHybridMissing) || created {
		t.Fatalf("err = %v, created = %v; want ErrHybridMissing", err, created)
	}
	if _, err := os.Stat(filepath.Join(dir, HybridFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("a new hybrid key was made silently")
	}
}

func TestRefusesNonRegularFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, IdentityFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreate(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("err = %v", err)
	}
}

// TestStrayHybridWithoutIdentity: a crash between writing hybrid.key and
// identity.key leaves no identity; the next start creates a whole new one.
func TestStrayHybridWithoutIdentity(t *testing.T) {
	dir := t.TempDir()
	stray := bytes.Repeat([]byte{7}, 32)
	if err := os.WriteFile(filepath.Join(dir, HybridFile), stray, FileMode); err != nil {
		t.Fatal(err)
	}
	id, created, err := LoadOrCreate(dir)
	if err != nil || !created {
		t.Fatalf("created = %v, err = %v", created, err)
	}
	if bytes.Equal(id.Hybrid().Bytes(), stray) {
		t.Fatal("stray hybrid key was adopted")
	}
	again, err := Load(dir)
	if err != nil || !again.Hybrid().Public().Equal(id.Hybrid().Public()) {
		t.Fatalf("reload: %v", err)
	}
}

func TestLoadWithoutIdentity(t *testing.T) {
	if _, err := Load(t.TempDir()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want fs.ErrNotExist", err)
	}
}

func TestDataDirIsAFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreate(f); err == nil {
		t.Fatal("accepted a file as data directory")
	}
}

// TestConcurrentFirstRuns: parallel first starts on one directory end with
// one identity that all of them hold.
func TestConcurrentFirstRuns(t *testing.T) {
	dir := t.TempDir()
	const n = 8
	ids := make([]*Identity, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id, _, err := LoadOrCreate(dir)
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = id
		})
	}
	wg.Wait()
	onDisk, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if id == nil || id.Hex() != onDisk.Hex() || !id.Hybrid().Public().Equal(onDisk.Hybrid().Public()) {
			t.Fatalf("run %d holds another identity than the one on disk", i)
		}
	}
}
