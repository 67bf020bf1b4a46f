package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/internal/boltcheck"
)

// A backup taken while writes go on holds every write acknowledged before
// it and, of the writes racing with it, exactly those committed before its
// moment: an inbox in it is a prefix of what was enqueued, with no gap.
func TestBackupWhileWriting(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	alice, bob, carol := key(1), key(2), key(3)
	for i := range 50 {
		enqueue1(t, s, alice, bob, ChannelID{}, fmt.Sprint("before ", i))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.Enqueue(alice, []Key{carol}, ChannelID{}, []byte(fmt.Sprint("during ", i))); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	enqueue1(t, s, alice, carol, ChannelID{}, "") // the writer is under way
	var buf bytes.Buffer
	var size int64 = -1
	n, err := s.Backup(&buf, func(n int64) { size = n })
	close(stop)
	wg.Wait()
	if err != nil || n != size || int64(buf.Len()) != n {
		t.Fatalf("Backup wrote %d bytes of %d announced (%d in the buffer): %v", n, size, buf.Len(), err)
	}

	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckFile(path); err != nil {
		t.Fatal(err)
	}
	restored := open(t, dir, Options{})
	got, err := restored.Peek(Inbox{Recipient: bob}, 0, 1<<30)
	if err != nil || len(got) != 50 || string(got[49].Data) != "before 49" {
		t.Fatalf("bob's inbox in the backup: %d messages, %v", len(got), err)
	}
	during, err := restored.Peek(Inbox{Recipient: carol}, 0, 1<<30)
	if err != nil || len(during) == 0 {
		t.Fatalf("carol's inbox in the backup: %d messages, %v", len(during), err)
	}
	for i, e := range during {
		if e.Seq != uint64(i+1) {
			t.Fatalf("carol's inbox in the backup has seq %d at %d: a gap", e.Seq, i)
		}
	}
	// The restored store goes on where the backup's moment was.
	if seq := enqueue1(t, restored, alice, carol, ChannelID{}, "after"); seq != uint64(len(during)+1) {
		t.Fatalf("first seq after restoring: %d, want %d", seq, len(during)+1)
	}
}

func TestCheckFileRefuses(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	enqueue1(t, s, key(1), key(2), ChannelID{}, "hello")
	var buf bytes.Buffer
	if _, err := s.Backup(&buf, nil); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()

	write := func(name string, b []byte) string {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	foreign := filepath.Join(t.TempDir(), "other.db")
	db, err := bbolt.Open(foreign, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("x")); return err })
	db.Close()
	// A page past the two meta pages whose header is overwritten: no
	// longer a page bbolt can read.
	damaged := bytes.Clone(good)
	pageSize := os.Getpagesize()
	for i := 2 * pageSize; i < 2*pageSize+16 && i < len(damaged); i++ {
		damaged[i] = 0xff
	}

	for name, c := range map[string]struct{ path, want string }{
		"not a database": {write("junk.db", []byte(strings.Repeat("junk", 4096))), "damaged"},
		"truncated":      {write("short.db", good[:len(good)/3]), "damaged"},
		"last page cut":  {write("cut.db", good[:len(good)-pageSize]), "damaged"},
		"damaged page":   {write("damaged.db", damaged), "damaged"},
		"another store":  {foreign, "not a home server database"},
		"missing":        {filepath.Join(t.TempDir(), "none.db"), "no such file"},
	} {
		err := CheckFile(c.path)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: CheckFile = %v, want an error with %q", name, err, c.want)
		}
	}
	if err := CheckFile(write("good.db", good)); err != nil {
		t.Errorf("an intact backup: %v", err)
	}
}

// TestOpenRefusesDamagedFile: a qpq.db whose pages lead round in a circle
// (bbolt alone would recurse until the stack overflows, ending the
// process) is refused with an error that says what to do, and left as it
// was.
func TestOpenRefusesDamagedFile(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	enqueue1(t, s, key(1), key(2), ChannelID{}, "hello")
	s.Close()
	path := filepath.Join(dir, FileName)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Point the root bucket's first bucket at the root bucket's own page.
	le, ps := binary.LittleEndian, os.Getpagesize()
	meta := b[16:]
	if m1 := b[ps+16:]; le.Uint64(m1[48:]) > le.Uint64(meta[48:]) {
		meta = m1
	}
	root := le.Uint64(meta[16:])
	e := b[int(root)*ps+16:]
	le.PutUint64(e[le.Uint32(e[4:])+le.Uint32(e[8:]):], root)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}

	_, err = Open(dir, Options{})
	if !errors.Is(err, boltcheck.ErrDamaged) || !strings.Contains(err.Error(), "qpq backup") {
		t.Fatalf("Open = %v, want a damaged-file error that names qpq backup", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, b) {
		t.Error("Open changed the damaged file")
	}
}
