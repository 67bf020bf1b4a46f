package names

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func newBook(t *testing.T) (*Book, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "node.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	b, err := New(db)
	if err != nil {
		t.Fatal(err)
	}
	return b, path
}

func id(b byte) ed25519.PublicKey { return bytes.Repeat([]byte{b}, ed25519.PublicKeySize) }

func TestFirstBindingWins(t *testing.T) {
	b, _ := newBook(t)
	if err := b.Bind("bob", id(1)); err != nil {
		t.Fatal(err)
	}
	if err := b.Bind("bob", id(1)); err != nil {
		t.Fatalf("rebinding to the same identity: %v", err)
	}
	if err := b.Bind("bob", id(2)); !errors.Is(err, ErrConflict) {
		t.Fatalf("rebinding to another identity: %v, want ErrConflict", err)
	}
	if got, ok := b.Identity("bob"); !ok || !bytes.Equal(got, id(1)) {
		t.Fatalf("bob is %x after a refused rebinding", got)
	}
	if _, ok := b.Name(id(2)); ok {
		t.Fatal("the refused identity got a name")
	}
	// A renamed user: the identity takes the new name, the old still
	// resolves.
	if err := b.Bind("robert", id(1)); err != nil {
		t.Fatal(err)
	}
	if n, _ := b.Name(id(1)); n != "robert" {
		t.Fatalf("name %q, want robert", n)
	}
	if got, _ := b.Identity("bob"); !bytes.Equal(got, id(1)) {
		t.Fatal("old name lost")
	}
}

func TestCheck(t *testing.T) {
	for _, bad := range []string{"", " bob", "bob ", "/dm", "a\x00b", "\xff", strings.Repeat("x", MaxNameSize+1)} {
		if Check(bad) == nil {
			t.Errorf("Check(%q) accepted", bad)
		}
	}
	for _, good := range []string{"bob", "Zoë Q", "小明", strings.Repeat("x", MaxNameSize)} {
		if err := Check(good); err != nil {
			t.Errorf("Check(%q): %v", good, err)
		}
	}
	b, _ := newBook(t)
	if err := b.Bind("bob", id(1)[:31]); !errors.Is(err, ErrInvalid) {
		t.Fatalf("short identity: %v", err)
	}
}

// TestBookIsBounded: a full book keeps what it has and refuses new names,
// also after a restart; bindings it holds still answer.
func TestBookIsBounded(t *testing.T) {
	b, path := newBook(t)
	b.max = 3
	for i, n := range []string{"a", "b", "c"} {
		if err := b.Bind(n, id(byte(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Bind("d", id(4)); !errors.Is(err, ErrFull) {
		t.Fatalf("a fourth name: %v, want ErrFull", err)
	}
	if err := b.Bind("a", id(1)); err != nil {
		t.Fatalf("a name it holds: %v", err)
	}
	if _, ok := b.Identity("d"); ok {
		t.Fatal("the refused name was kept")
	}

	b.db.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if b, err = New(db); err != nil {
		t.Fatal(err)
	}
	if got := b.names.Load(); got != 3 {
		t.Fatalf("counted %d names on open, want 3", got)
	}
	b.max = 3
	if err := b.Bind("e", id(5)); !errors.Is(err, ErrFull) {
		t.Fatalf("a new name after reopening: %v, want ErrFull", err)
	}
}
