// Package identity keeps a node's long-term keys in its data directory: the
// Ed25519 identity key, which names the node everywhere (MLS credential and
// leaf signature key, libp2p peer ID, home-server account), and the X-Wing
// hybrid key that peers seal envelopes to.
//
// Each key lives in its own file of raw bytes, mode 0600, in the data
// directory (created 0700 when missing):
//
//	identity.key  32 bytes  Ed25519 private key seed (RFC 8032)
//	hybrid.key    32 bytes  X-Wing private key seed (see package seal)
//
// LoadOrCreate makes both on first run and loads them afterwards. It refuses,
// with an error that says what to do, a key file that other users could read,
// one of the wrong size, or a hybrid key file missing beside an existing
// identity (silently replacing it would strand every message sealed to the
// old key). The package does not back keys up, rotate them, or encrypt them
// at rest.
package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/quicproquo/qpq/internal/atomicfile"
	"github.com/quicproquo/qpq/seal"
)

// File names inside the data directory.
const (
	IdentityFile = "identity.key"
	HybridFile   = "hybrid.key"
)

// Modes of what LoadOrCreate creates; key files with any group or other
// permission bit are refused.
const (
	DirMode  fs.FileMode = 0o700
	FileMode fs.FileMode = 0o600
)

// Errors callers can branch on; the returned errors wrap them with the path
// and the remedy.
var (
	ErrPermissions   = errors.New("identity: key file is accessible to other users")
	ErrKeySize       = errors.New("identity: key file has the wrong size")
	ErrHybridMissing = errors.New("identity: hybrid key file is missing")
)

// Identity is a node's pair of long-term private keys. It is immutable and
// safe for concurrent use.
type Identity struct {
	priv   ed25519.PrivateKey
	hybrid *seal.PrivateKey
}

// LoadOrCreate loads the keys from dir, creating dir and the keys if there is
// no identity yet. created reports whether new keys were made.
func LoadOrCreate(dir string) (id *Identity, created bool, err error) {
	if err := os.MkdirAll(dir, DirMode); err != nil {
		return nil, false, fmt.Errorf("identity: create data directory: %w", err)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return nil, false, err
	}
	defer unlock()

	idPath := filepath.Join(dir, IdentityFile)
	if _, err := os.Lstat(idPath); errors.Is(err, fs.ErrNotExist) {
		id, err := create(dir)
		return id, err == nil, err
	}
	id, err = Load(dir)
	return id, false, err
}

// Load loads existing keys from dir. It fails with an error wrapping
// fs.ErrNotExist when dir holds no identity.
func Load(dir string) (*Identity, error) {
	idPath := filepath.Join(dir, IdentityFile)
	hyPath := filepath.Join(dir, HybridFile)
	seed, err := readKey(idPath, ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	hseed, err := readKey(hyPath, seal.PrivateKeySize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s exists but %s does not; restore %s from a backup, "+
			"or move the data directory aside to start over with a new identity",
			ErrHybridMissing, idPath, hyPath, HybridFile)
	}
	if err != nil {
		return nil, err
	}
	hybrid, err := seal.ParsePrivateKey(hseed)
	if err != nil {
		return nil, fmt.Errorf("identity: %s: %w", hyPath, err)
	}
	return &Identity{priv: ed25519.NewKeyFromSeed(seed), hybrid: hybrid}, nil
}

// create makes both keys. The hybrid key is written first: identity.key is
// what marks an identity as existing, so a crash in between leaves no
// identity, and the next start creates both again.
func create(dir string) (*Identity, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("identity: generate Ed25519 key: %w", err)
	}
	hybrid, err := seal.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if err := writeKey(dir, HybridFile, hybrid.Bytes()); err != nil {
		return nil, err
	}
	if err := writeKey(dir, IdentityFile, priv.Seed()); err != nil {
		return nil, err
	}
	return &Identity{priv: priv, hybrid: hybrid}, nil
}

// readKey reads a key file of exactly size bytes that only its owner may
// access. The checks use the opened file, not the path, so they apply to
// what is read.
func readKey(path string, size int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("identity: %s is not a regular file", path)
	}
	if err := checkPrivate(path, fi); err != nil {
		return nil, err
	}
	if fi.Size() != int64(size) {
		return nil, fmt.Errorf("%w: %s is %d bytes, want %d: it is damaged or not a quicproquo key; "+
			"restore it from a backup, or move the data directory aside to start over with a new identity",
			ErrKeySize, path, fi.Size(), size)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, fmt.Errorf("identity: read %s: %w", path, err)
	}
	return b, nil
}

// writeKey writes b to dir/name atomically and durably (atomicfile).
func writeKey(dir, name string, b []byte) error {
	err := atomicfile.Write(filepath.Join(dir, name), FileMode, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	}, nil)
	if err != nil {
		return fmt.Errorf("identity: write %s: %w", name, err)
	}
	return nil
}

// PublicKey returns the 32-byte Ed25519 identity public key.
func (id *Identity) PublicKey() ed25519.PublicKey {
	return append(ed25519.PublicKey{}, id.priv[ed25519.SeedSize:]...)
}

// Hex returns the identity public key as 64 lowercase hex digits.
func (id *Identity) Hex() string { return hex.EncodeToString(id.priv[ed25519.SeedSize:]) }

// PrivateKey returns the Ed25519 private key in its 64-byte form (seed ||
// public key). That is also libp2p's raw Ed25519 form:
// crypto.UnmarshalEd25519PrivateKey accepts it, and the peer ID derived from
// it is the node's peer ID.
func (id *Identity) PrivateKey() ed25519.PrivateKey {
	return append(ed25519.PrivateKey{}, id.priv...)
}

// Hybrid returns the hybrid (X-Wing) private key; its public half is what
// the node uploads with uploadHybridKey and serves to peers.
func (id *Identity) Hybrid() *seal.PrivateKey { return id.hybrid }
