package boltcheck

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.etcd.io/bbolt"
)

// makeDB writes a bbolt file with every kind of page Check reads: branch
// pages, leaves, values spanning overflow pages, nested buckets stored in
// pages of their own and inline, and free pages left by deletes. With
// syncFreelist the freelist is written to a page of its own; without it,
// it is not, as in this project's home server.
func makeDB(t testing.TB, syncFreelist bool) string { return makeDBOf(t, syncFreelist, 600) }

// makeDBOf is makeDB with keys records in its biggest bucket.
func makeDBOf(t testing.TB, syncFreelist bool, keys int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test.db")
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{NoFreelistSync: !syncFreelist, PageSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bbolt.Tx) error {
		big, err := tx.CreateBucket([]byte("big"))
		if err != nil {
			return err
		}
		for i := range keys {
			if err := big.Put(fmt.Appendf(nil, "key-%05d", i), bytes.Repeat([]byte{byte(i)}, 100)); err != nil {
				return err
			}
		}
		if err := big.Put([]byte("huge"), bytes.Repeat([]byte("h"), 5000)); err != nil {
			return err
		}
		nested, err := big.CreateBucket([]byte("nested"))
		if err != nil {
			return err
		}
		for i := range 200 {
			if err := nested.Put(fmt.Appendf(nil, "n-%04d", i), bytes.Repeat([]byte("n"), 50)); err != nil {
				return err
			}
		}
		small, err := tx.CreateBucket([]byte("small")) // inline
		if err != nil {
			return err
		}
		inner, err := small.CreateBucket([]byte("inner")) // inline in inline
		if err != nil {
			return err
		}
		if err := inner.Put([]byte("a"), []byte("b")); err != nil {
			return err
		}
		return small.Put([]byte("k"), []byte("v"))
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		big := tx.Bucket([]byte("big"))
		for i := 0; i < keys; i += 3 {
			if err := big.Delete(fmt.Appendf(nil, "key-%05d", i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// dbFile is a database file in memory, for damaging it.
type dbFile struct {
	b        []byte
	pageSize int
}

func load(t testing.TB, path string) *dbFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return &dbFile{b: b, pageSize: 4096}
}

func (f *dbFile) check() error { return Check(bytes.NewReader(f.b), int64(len(f.b))) }

func (f *dbFile) page(id uint64) []byte { return f.b[int(id)*f.pageSize:] }

func (f *dbFile) flags(id uint64) uint16 { return binary.LittleEndian.Uint16(f.page(id)[8:]) }

// current returns the meta page in use and its contents.
func (f *dbFile) current() (uint64, meta) {
	m0, _ := parseMeta(f.page(0)[pageHeaderSize:])
	m1, _ := parseMeta(f.page(1)[pageHeaderSize:])
	if m1.txid > m0.txid {
		return 1, m1
	}
	return 0, m0
}

// editMeta changes the meta page in use with edit and gives it a valid
// checksum.
func (f *dbFile) editMeta(edit func(m []byte)) {
	id, _ := f.current()
	m := f.page(id)[pageHeaderSize:]
	edit(m)
	h := fnv.New64a()
	h.Write(m[:56])
	binary.LittleEndian.PutUint64(m[56:], h.Sum64())
}

// find returns the first page reachable from the meta page in use
// (unlike free pages, which may hold anything) with the given flags for which ok
// holds.
func (f *dbFile) find(t *testing.T, flags uint16, ok func(p []byte) bool) uint64 {
	t.Helper()
	c, err := check(bytes.NewReader(f.b), int64(len(f.b)))
	if err != nil {
		t.Fatal(err)
	}
	for id := uint64(2); id < c.hwm; id++ {
		if c.used.has(id) && f.flags(id) == flags && ok(f.page(id)[:f.pageSize]) {
			return id
		}
	}
	t.Fatalf("no page with flags %#x as wanted", flags)
	return 0
}

func anyPage([]byte) bool { return true }

// elem returns element i of page p.
func elem(p []byte, i int) []byte { return p[pageHeaderSize+i*elementSize:] }

func count(p []byte) int { return int(binary.LittleEndian.Uint16(p[10:])) }

// leafElem returns the flags, key and value of element i of leaf page p,
// if they lie in p.
func leafElem(p []byte, i int) (flags uint32, key, value []byte, ok bool) {
	le := binary.LittleEndian
	e := elem(p, i)
	pos, ks, vs := int(le.Uint32(e[4:])), int(le.Uint32(e[8:])), int(le.Uint32(e[12:]))
	if pos+ks+vs > len(e) {
		return 0, nil, nil, false
	}
	return le.Uint32(e), e[pos : pos+ks], e[pos+ks : pos+ks+vs], true
}

func TestCheckAcceptsBboltFiles(t *testing.T) {
	for _, sync := range []bool{false, true} {
		t.Run(fmt.Sprintf("syncFreelist=%v", sync), func(t *testing.T) {
			path := makeDB(t, sync)
			if err := File(path); err != nil {
				t.Fatal(err)
			}
			f := load(t, path)
			if _, m := f.current(); (m.freelist != noFreelist) != sync {
				t.Fatalf("freelist page %d, want one: %v", m.freelist, sync)
			}
			// The fixture has every kind of page the checks are about.
			f.find(t, flagBranch, anyPage)
			f.find(t, flagLeaf, func(p []byte) bool { return binary.LittleEndian.Uint32(p[12:]) > 0 })
			f.find(t, flagLeaf, func(p []byte) bool {
				for i := range count(p) {
					flags, _, v, ok := leafElem(p, i)
					if ok && flags&leafFlagBucket != 0 && binary.LittleEndian.Uint64(v) == 0 {
						return true
					}
				}
				return false
			})
		})
	}
}

func TestCheckRefusesDamage(t *testing.T) {
	le := binary.LittleEndian
	branch := func(f *dbFile, t *testing.T) []byte { return f.page(f.find(t, flagBranch, anyPage)) }
	leaf := func(f *dbFile, t *testing.T) []byte {
		return f.page(f.find(t, flagLeaf, func(p []byte) bool { return count(p) > 2 }))
	}
	inlineLeaf := func(f *dbFile, t *testing.T) []byte {
		var inline []byte
		f.find(t, flagLeaf, func(p []byte) bool {
			for i := range count(p) {
				flags, _, v, ok := leafElem(p, i)
				if ok && flags&leafFlagBucket != 0 && le.Uint64(v) == 0 {
					inline = v[bucketHeaderSize:]
					return true
				}
			}
			return false
		})
		return inline
	}
	tests := []struct {
		name   string
		damage func(f *dbFile, t *testing.T)
		want   string
	}{
		{"cut short", func(f *dbFile, t *testing.T) { _, m := f.current(); f.b = f.b[:int(m.hwm-1)*f.pageSize] }, "the file is"},
		{"both meta pages", func(f *dbFile, t *testing.T) { f.page(0)[pageHeaderSize] ^= 1; f.page(1)[pageHeaderSize] ^= 1 }, "no valid meta page"},
		{"root beyond the last page", func(f *dbFile, t *testing.T) {
			f.editMeta(func(m []byte) { le.PutUint64(m[16:], le.Uint64(m[40:])) })
		}, "root bucket at page"},
		{"root on a meta page", func(f *dbFile, t *testing.T) { f.editMeta(func(m []byte) { le.PutUint64(m[16:], 1) }) }, "root bucket at page"},
		{"page size of another file", func(f *dbFile, t *testing.T) { f.editMeta(func(m []byte) { le.PutUint32(m[8:], 8192) }) }, "page size"},
		{"branch points at itself", func(f *dbFile, t *testing.T) {
			p := branch(f, t)
			le.PutUint64(elem(p, 0)[8:], le.Uint64(p))
		}, "reached twice"},
		{"branch points beyond the last page", func(f *dbFile, t *testing.T) {
			le.PutUint64(elem(branch(f, t), 0)[8:], 1<<40)
		}, "outside pages"},
		{"branch points at a meta page", func(f *dbFile, t *testing.T) {
			le.PutUint64(elem(branch(f, t), 0)[8:], 0)
		}, "outside pages"},
		{"two branches share a child", func(f *dbFile, t *testing.T) {
			p := branch(f, t)
			le.PutUint64(elem(p, 1)[8:], le.Uint64(elem(p, 0)[8:]))
		}, "reached twice"},
		{"unknown page flags", func(f *dbFile, t *testing.T) { le.PutUint16(leaf(f, t)[8:], 0x20) }, "has flags"},
		{"a freelist page in a tree", func(f *dbFile, t *testing.T) { le.PutUint16(leaf(f, t)[8:], flagFreelist) }, "has flags"},
		{"page says it is another", func(f *dbFile, t *testing.T) { p := leaf(f, t); le.PutUint64(p, le.Uint64(p)+1) }, "says it is page"},
		{"overflow past the end", func(f *dbFile, t *testing.T) { le.PutUint32(leaf(f, t)[12:], 1<<30) }, "runs over"},
		{"too many elements", func(f *dbFile, t *testing.T) { le.PutUint16(leaf(f, t)[10:], 0xFFFF) }, "do not fit"},
		{"key outside the page", func(f *dbFile, t *testing.T) { le.PutUint32(elem(leaf(f, t), 1)[4:], 1<<31) }, "is not where its data lies"},
		{"value outside the page", func(f *dbFile, t *testing.T) { le.PutUint32(elem(leaf(f, t), 1)[12:], 1<<20) }, "is not where its data lies"},
		{"empty key", func(f *dbFile, t *testing.T) { le.PutUint32(elem(leaf(f, t), 1)[8:], 0) }, "is not where its data lies"},
		{"unknown element flags", func(f *dbFile, t *testing.T) { le.PutUint32(elem(leaf(f, t), 1), 0x4) }, "element 1 has flags"},
		{"keys out of order", func(f *dbFile, t *testing.T) {
			p := leaf(f, t)
			_, k1, _, _ := leafElem(p, 1)
			_, k2, _, _ := leafElem(p, 2)
			copy(k2, k1)
		}, "is not above"},
		{"branch key that is not its child's first", func(f *dbFile, t *testing.T) {
			// Lower the first key of a branch: still below every key of
			// its first child, but no longer the first of them.
			e := elem(branch(f, t), 0)
			e[le.Uint32(e)+le.Uint32(e[4:])-1]--
		}, "is not the first key"},
		{"data out of order", func(f *dbFile, t *testing.T) {
			// Element 0 points at element 1's data and element 1 at
			// element 0's, both keys still inside the page and ordered.
			p := leaf(f, t)
			_, k0, v0, _ := leafElem(p, 0)
			_, k1, v1, _ := leafElem(p, 1)
			if len(k0)+len(v0) != len(k1)+len(v1) {
				t.Skip("records of different sizes")
			}
			le.PutUint32(elem(p, 0)[4:], le.Uint32(elem(p, 0)[4:])+uint32(len(k0)+len(v0)))
			le.PutUint32(elem(p, 1)[4:], le.Uint32(elem(p, 1)[4:])-uint32(len(k0)+len(v0)))
			copy(k1, k0) // so that the order check alone would pass
			k1[len(k1)-1]++
		}, "is not where its data lies"},
		{"empty branch", func(f *dbFile, t *testing.T) { le.PutUint16(branch(f, t)[10:], 0) }, "is empty"},
		{"a record made a bucket", func(f *dbFile, t *testing.T) {
			// A value of 100 bytes of one non-zero byte, read as a bucket
			// header, names a page far beyond the file.
			p := f.page(f.find(t, flagLeaf, func(p []byte) bool {
				if count(p) < 2 {
					return false
				}
				_, _, v, ok := leafElem(p, 1)
				return ok && len(v) == 100 && v[0] != 0
			}))
			le.PutUint32(elem(p, 1), leafFlagBucket)
		}, "outside pages"},
		{"a record in the root bucket", func(f *dbFile, t *testing.T) {
			_, m := f.current()
			le.PutUint32(elem(f.page(m.root), 0), 0)
		}, "record in the root bucket"},
		{"inline bucket that is no leaf", func(f *dbFile, t *testing.T) { le.PutUint16(inlineLeaf(f, t)[8:], flagBranch) }, "inline bucket"},
		{"inline bucket key outside it", func(f *dbFile, t *testing.T) {
			le.PutUint32(elem(inlineLeaf(f, t), 0)[8:], 4000)
		}, "is not where its data lies"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := load(t, makeDB(t, false))
			if err := f.check(); err != nil {
				t.Fatalf("before the damage: %v", err)
			}
			tt.damage(f, t)
			err := f.check()
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Check = %v, want ErrDamaged saying %q", err, tt.want)
			}
		})
	}
}

func TestCheckFreelist(t *testing.T) {
	le := binary.LittleEndian
	for _, tt := range []struct {
		name   string
		damage func(f *dbFile, fl []byte)
		want   string
	}{
		{"frees a page in use", func(f *dbFile, fl []byte) {
			_, m := f.current()
			le.PutUint64(fl[pageHeaderSize:], m.root)
		}, "both in use and free"},
		{"frees a meta page", func(f *dbFile, fl []byte) { le.PutUint64(fl[pageHeaderSize:], 1) }, "outside pages"},
		{"frees a page twice", func(f *dbFile, fl []byte) {
			le.PutUint64(fl[pageHeaderSize+8:], le.Uint64(fl[pageHeaderSize:]))
		}, "twice"},
		{"counts more than it holds", func(f *dbFile, fl []byte) {
			le.PutUint16(fl[10:], 0xFFFF)
			le.PutUint64(fl[pageHeaderSize:], 1<<40)
		}, "holds at most"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := load(t, makeDB(t, true))
			_, m := f.current()
			fl := f.page(m.freelist)
			if count(fl) < 2 || count(fl) == freelistOverrun {
				t.Fatalf("freelist of %d pages; the test wants a few", count(fl))
			}
			tt.damage(f, fl)
			if err := f.check(); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Check = %v, want ErrDamaged saying %q", err, tt.want)
			}
		})
	}
}

// TestCheckFallsBackToTheOtherMeta: a damaged newest meta page is what a
// crash in the middle of a commit leaves; bbolt then uses the other one,
// and so does Check.
func TestCheckFallsBackToTheOtherMeta(t *testing.T) {
	f := load(t, makeDB(t, false))
	id, _ := f.current()
	f.page(id)[pageHeaderSize+60] ^= 0xFF // the checksum
	if err := f.check(); err != nil {
		t.Fatal(err)
	}
	// And the page size is found from the second meta page when the
	// first is the damaged one.
	g := load(t, makeDB(t, false))
	g.page(0)[pageHeaderSize] ^= 1
	if err := g.check(); err != nil {
		t.Fatal(err)
	}
}

func TestFileWhileAnotherProcessWrites(t *testing.T) {
	path := makeDB(t, false)
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{NoFreelistSync: true})
	if err != nil {
		t.Fatal(err)
	}
	// A second descriptor's flock conflicts as another process's would.
	if err := File(path); !errors.Is(err, ErrLocked) {
		t.Fatalf("File = %v, want ErrLocked", err)
	}
	db.Close()
	if err := File(path); err != nil {
		t.Fatal(err)
	}
	if err := File(filepath.Join(t.TempDir(), "missing.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("File of a missing file = %v", err)
	}
}

func TestCheckEmptyAndJunk(t *testing.T) {
	for _, b := range [][]byte{nil, []byte("not a database"), bytes.Repeat([]byte{0xFF}, 64<<10)} {
		if err := Check(bytes.NewReader(b), int64(len(b))); !errors.Is(err, ErrDamaged) {
			t.Errorf("Check(%d bytes) = %v, want ErrDamaged", len(b), err)
		}
	}
}

// BenchmarkFile checks a 64 MiB database (64k records of 1 KiB in 16
// buckets) beside the bare baseline of reading the same file once,
// sequentially, through a 1 MiB buffer.
func BenchmarkFile(b *testing.B) {
	path := filepath.Join(b.TempDir(), "bench.db")
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{NoFreelistSync: true})
	if err != nil {
		b.Fatal(err)
	}
	for n := range 16 {
		err := db.Update(func(tx *bbolt.Tx) error {
			bk, err := tx.CreateBucket(fmt.Appendf(nil, "b%02d", n))
			if err != nil {
				return err
			}
			for i := range 4096 {
				if err := bk.Put(binary.BigEndian.AppendUint64(nil, uint64(i)), bytes.Repeat([]byte{1}, 1024)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	db.Close()
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("check", func(b *testing.B) {
		b.SetBytes(fi.Size())
		for b.Loop() {
			if err := File(path); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("read-baseline", func(b *testing.B) {
		b.SetBytes(fi.Size())
		buf := make([]byte, 1<<20)
		for b.Loop() {
			f, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			for {
				if _, err := f.Read(buf); err != nil {
					break
				}
			}
			f.Close()
		}
	})
}
