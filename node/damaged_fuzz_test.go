package node

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/quicproquo/qpq/internal/boltcheck"
	"github.com/quicproquo/qpq/internal/boltcheck/boltfuzz"
	"github.com/quicproquo/qpq/node/identity"
)

// FuzzOpenDamaged damages a node's node.db with the fuzzer's edits
// (boltfuzz.Apply). Whatever the page check lets through — sound pages
// holding damaged records — the node must refuse with an error or run,
// never panic: Open, then the commands that read what the file held. Each
// input starts a node (a libp2p host on loopback), so this fuzzes slowly.
func FuzzOpenDamaged(f *testing.F) {
	// A node with a group, its messages, names and key packages.
	src := f.TempDir()
	n, err := Open(context.Background(), fuzzConfig(src))
	if err != nil {
		f.Fatal(err)
	}
	if _, err := n.CreateGroup("team"); err != nil {
		f.Fatal(err)
	}
	for i := range 5 {
		if _, err := n.Send("team", fmt.Sprint("note ", i)); err != nil {
			f.Fatal(err)
		}
	}
	n.Close()
	base, err := os.ReadFile(filepath.Join(src, DBFile))
	if err != nil {
		f.Fatal(err)
	}
	keyFiles := map[string][]byte{}
	for _, name := range []string{identity.IdentityFile, identity.HybridFile} {
		if keyFiles[name], err = os.ReadFile(filepath.Join(src, name)); err != nil {
			f.Fatal(err)
		}
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, edits []byte) {
		b := boltfuzz.Apply(base, edits)
		if boltcheck.Check(bytes.NewReader(b), int64(len(b))) != nil {
			return
		}
		dir := t.TempDir()
		files := map[string][]byte{DBFile: b}
		for name, key := range keyFiles {
			files[name] = key
		}
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		n, err := Open(context.Background(), fuzzConfig(dir))
		if err != nil {
			return
		}
		defer n.Close()
		for _, c := range n.Conversations() {
			n.History(c.Name, 100)
		}
		n.Send("team", "after")
		n.CreateGroup("another")
		n.Whoami()
	})
}

func fuzzConfig(dir string) Config {
	return Config{
		DataDir:     dir,
		Username:    "alice",
		NoMDNS:      true,
		ListenAddrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/udp/0/quic-v1")},
	}
}
