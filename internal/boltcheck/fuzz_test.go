package boltcheck

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/internal/boltcheck/boltfuzz"
)

// FuzzCheck damages a small bbolt file with the fuzzer's edits
// (boltfuzz.Apply) and asserts what Check promises: when it accepts the
// file, bbolt opens it the way the home server does (rebuilding the
// freelist from the pages), reads every bucket and record, commits a
// change to every bucket and opens it again the way a node does, all
// without a panic. A panic in bbolt's own goroutine ends the fuzzer, as it
// would end the server.
func FuzzCheck(f *testing.F) {
	base := load(f, makeDBOf(f, false, 100))
	_, m := base.current()
	base.b = base.b[:int(m.hwm)*base.pageSize]
	f.Add([]byte{})
	// Seeds: a byte of a meta page, of the root page's header and of its
	// first element, of a middle page.
	for _, off := range []uint64{pageHeaderSize + 16, m.root * 4096, m.root*4096 + pageHeaderSize + 4, m.hwm / 2 * 4096} {
		f.Add(append(binary.LittleEndian.AppendUint32(nil, uint32(off)), 1))
	}
	f.Fuzz(func(t *testing.T, edits []byte) {
		b := boltfuzz.Apply(base.b, edits)
		if Check(bytes.NewReader(b), int64(len(b))) != nil {
			return
		}
		path := filepath.Join(t.TempDir(), "fuzz.db")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		exercise(t, path, &bbolt.Options{NoFreelistSync: true, FreelistType: bbolt.FreelistMapType})
		exercise(t, path, nil)
	})
}

// exercise opens the file at path with opts, reads all of it and changes
// every bucket. bbolt may refuse the file with an error; it must not panic.
func exercise(t *testing.T, path string, opts *bbolt.Options) {
	db, err := bbolt.Open(path, 0o600, opts)
	if err != nil {
		return
	}
	defer db.Close()
	var buckets [][][]byte // paths of every bucket
	var walk func(b *bbolt.Bucket, at [][]byte) error
	walk = func(b *bbolt.Bucket, at [][]byte) error {
		buckets = append(buckets, at)
		return b.ForEach(func(k, v []byte) error {
			if v == nil {
				if child := b.Bucket(k); child != nil {
					return walk(child, append(at[:len(at):len(at)], bytes.Clone(k)))
				}
			}
			return nil
		})
	}
	db.View(func(tx *bbolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
			return walk(b, [][]byte{bytes.Clone(name)})
		})
	})
	db.Update(func(tx *bbolt.Tx) error {
		for _, at := range buckets {
			b := tx.Bucket(at[0])
			for _, name := range at[1:] {
				if b == nil {
					break
				}
				b = b.Bucket(name)
			}
			if b == nil {
				continue
			}
			if k, _ := b.Cursor().First(); k != nil {
				b.Delete(k)
			}
			b.Put([]byte("fuzz"), bytes.Repeat([]byte("z"), 300))
		}
		return nil
	})
}
