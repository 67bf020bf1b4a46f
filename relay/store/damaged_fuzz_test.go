package store

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/quicproquo/qpq/internal/boltcheck"
	"github.com/quicproquo/qpq/internal/boltcheck/boltfuzz"
)

// FuzzOpenDamaged damages a store file with the fuzzer's edits
// (boltfuzz.Apply). Whatever page check lets through — sound pages holding
// damaged records, a bucket turned into a record — the store must refuse
// with an error or serve, never panic: Open, and then a call of every kind
// on the records the file held.
func FuzzOpenDamaged(f *testing.F) {
	dir := f.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		f.Fatal(err)
	}
	alice, bob := key(1), key(2)
	ch, _, err := s.CreateChannel(alice, bob)
	if err != nil {
		f.Fatal(err)
	}
	for i := range 20 {
		if _, err := s.Enqueue(alice, []Key{bob}, ChannelID{}, bytes.Repeat([]byte{byte(i)}, 100)); err != nil {
			f.Fatal(err)
		}
		if _, err := s.Enqueue(bob, []Key{alice}, ch, []byte("in a channel")); err != nil {
			f.Fatal(err)
		}
	}
	at := time.Unix(1_700_000_000, 0)
	var sel [SelectorSize]byte
	sel[0] = 9
	for _, err := range []error{
		s.CreateUser("alice", User{Identity: alice, Created: at, Record: bytes.Repeat([]byte{7}, 192)}),
		s.PutToken(sel, Token{Identity: alice, Expiry: at.Add(time.Hour)}),
		s.PutKeyPackage(alice, []byte("a key package")),
		s.PutLastResortKeyPackage(alice, []byte("the last resort")),
		s.PutHybridKey(alice, bytes.Repeat([]byte{3}, 1216)),
		s.PutEndpoint(alice, Endpoint{Published: at, NodeAddr: []byte(`{"ID":"x"}`)}),
		s.PutRemote(key(3), Remote{Domain: "b.test", Name: "carol"}),
	} {
		if err != nil {
			f.Fatal(err)
		}
	}
	if _, err := s.Secret("opaque", func() ([]byte, error) { return []byte("secret"), nil }); err != nil {
		f.Fatal(err)
	}
	s.Close()
	base, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, edits []byte) {
		b := boltfuzz.Apply(base, edits)
		if boltcheck.Check(bytes.NewReader(b), int64(len(b))) != nil {
			return
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, FileName), b, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(dir, Options{})
		if err != nil {
			return
		}
		defer s.Close()
		for _, in := range []Inbox{{Recipient: bob}, {Recipient: alice, Channel: ch}} {
			s.Peek(in, 0, 1<<20)
			s.InboxState(in)
			s.Fetch(in, 5, 1<<20)
			s.Ack(in, 10)
		}
		s.Enqueue(alice, []Key{bob}, ChannelID{}, []byte("after"))
		s.Enqueue(bob, []Key{alice}, ch, []byte("after"))
		s.Channel(ch)
		s.CreateChannel(alice, key(4))
		s.User("alice")
		s.Username(alice)
		s.Token(sel)
		s.DeleteExpiredTokens(at.Add(2 * time.Hour))
		s.KeyPackageCount(alice)
		s.PopKeyPackage(alice)
		s.LastResortKeyPackage(alice)
		s.HybridKeys(alice, bob)
		s.Endpoint(alice)
		s.Homes(alice, key(3))
		s.RemoteOf(key(3))
		s.Secret("opaque", func() ([]byte, error) { return []byte("new"), nil })
		s.Backup(&bytes.Buffer{}, nil)
	})
}
