// Package boltcheck verifies the page structure of a bbolt database file
// by reading the file itself, without bbolt, so that a damaged file is
// refused with an error before bbolt opens it.
//
// bbolt trusts its pages. Opening a damaged file read-write panics (when
// the freelist is rebuilt from the pages, in a goroutine of bbolt's own,
// beyond any recover), a bad page found later panics whichever goroutine
// reads it, and a branch page that points back up its own path sends
// bbolt's cursor round forever or its checker into a stack overflow. A
// file that Check accepts has none of that: every page reachable from the
// meta page bbolt would use lies inside the file and its high-water mark,
// is the kind of page its parent expects and is reached once; every
// element, key and value lies inside its page; keys are in the order
// bbolt's search relies on; nested buckets, inline or not, are checked
// alike; a freelist page, when there is one, names only pages in range and
// none in use.
//
// It does not read what keys and values mean: that is the owner's job
// once bbolt has the file open.
//
// # Layout
//
// bbolt's file format version 2 in little-endian byte order (the byte
// order of every platform this project builds for). The file is pages of
// one size, page 0 and page 1 being the two meta pages. Every page starts
// with a 16-byte header:
//
//	id u64 | flags u16 | count u16 | overflow u32
//
// flags is exactly one of branch (0x01), leaf (0x02), meta (0x04) and
// freelist (0x10); a page with overflow n spans n further pages. After the
// header come count 16-byte elements, then the keys and values they point
// at:
//
//	branch element: pos u32 | ksize u32 | child page u64
//	leaf element:   flags u32 | pos u32 | ksize u32 | vsize u32
//
// pos counts from the element's own first byte; a leaf element's value
// follows its key. A leaf element with flag 0x01 is a nested bucket whose
// value is a 16-byte bucket header (root page u64 | sequence u64); root
// page 0 means an inline bucket, whose leaf page (header and elements)
// follows the bucket header inside the value. A meta page holds, after
// its header:
//
//	magic u32 = 0xED0CDAED | version u32 = 2 | page size u32 | flags u32 |
//	root bucket header (16) | freelist page u64 | high-water mark u64 |
//	txid u64 | checksum u64 (FNV-64a of the 56 bytes before it)
//
// The high-water mark is the number of pages in use; the freelist page is
// all ones when the freelist is not written (bbolt's NoFreelistSync). A
// freelist page's count is the number of page ids after its header; a
// count of 0xFFFF means the first u64 after the header holds the count.
package boltcheck

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"slices"
)

// Layout constants (see the package doc).
const (
	pageHeaderSize   = 16
	elementSize      = 16
	bucketHeaderSize = 16
	metaSize         = 64

	flagBranch   = 0x01
	flagLeaf     = 0x02
	flagFreelist = 0x10

	leafFlagBucket = 0x01

	magic           = 0xED0CDAED
	formatVersion   = 2
	noFreelist      = ^uint64(0)
	freelistOverrun = 0xFFFF
)

// Limits of what Check accepts.
const (
	// minPageSize and maxPageSize bound the page size a meta page may
	// state; bbolt looks for the second meta page at offsets of 1 KiB up
	// to 16 MiB.
	minPageSize = 1 << 10
	maxPageSize = 16 << 20
	// maxDepth bounds how deep Check follows branch pages and nested
	// buckets together. A bbolt tree is a few levels deep even at
	// terabytes, and this project nests buckets two deep.
	maxDepth = 256
)

// ErrDamaged is wrapped by every error that says the file itself is
// damaged (rather than that it could not be read).
var ErrDamaged = errors.New("damaged bbolt file")

func damaged(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrDamaged}, args...)...)
}

// meta is the part of a meta page Check uses.
type meta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	hwm      uint64
	txid     uint64
}

// parseMeta reads a meta page's contents (the bytes after its header) and
// says whether it is valid as bbolt judges it: magic, version, checksum.
func parseMeta(b []byte) (meta, bool) {
	if len(b) < metaSize {
		return meta{}, false
	}
	le := binary.LittleEndian
	h := fnv.New64a()
	h.Write(b[:56])
	if le.Uint32(b[0:]) != magic || le.Uint32(b[4:]) != formatVersion || le.Uint64(b[56:]) != h.Sum64() {
		return meta{}, false
	}
	return meta{
		pageSize: le.Uint32(b[8:]),
		root:     le.Uint64(b[16:]),
		freelist: le.Uint64(b[32:]),
		hwm:      le.Uint64(b[40:]),
		txid:     le.Uint64(b[48:]),
	}, true
}

// checker is the state of one Check.
type checker struct {
	r        io.ReaderAt
	pageSize uint64
	hwm      uint64
	used     bitmap // pages reached from the meta page
	free     bitmap // pages the freelist names
	bufs     [][]byte
}

// Check verifies the file read through r, of the given size. It returns
// an error wrapping ErrDamaged when the file is damaged, another error
// when it cannot be read, and nil when bbolt can read every page of it.
func Check(r io.ReaderAt, size int64) error {
	_, err := check(r, size)
	return err
}

// check is Check, returning the checker for tests to see which pages it
// reached.
func check(r io.ReaderAt, size int64) (*checker, error) {
	m, pageSize, err := currentMeta(r, size)
	if err != nil {
		return nil, err
	}
	c := &checker{r: r, pageSize: uint64(pageSize), hwm: m.hwm}
	switch {
	case int64(m.pageSize) != pageSize:
		return nil, damaged("meta page states a page size of %d bytes in a file of %d-byte pages", m.pageSize, pageSize)
	case m.hwm < 3 || m.hwm > uint64(size)/c.pageSize:
		return nil, damaged("meta page counts %d pages of %d bytes; the file is %d bytes", m.hwm, m.pageSize, size)
	case m.root < 2 || m.root >= m.hwm:
		return nil, damaged("root bucket at page %d, outside pages 2 to %d", m.root, m.hwm-1)
	}
	c.used = newBitmap(m.hwm)
	c.free = newBitmap(m.hwm)
	c.used.set(0)
	c.used.set(1)
	if m.freelist != noFreelist {
		if err := c.freelist(m.freelist); err != nil {
			return nil, err
		}
	}
	_, err = c.tree(m.root, 0, true, nil, nil)
	return c, err
}

// currentMeta finds the page size as bbolt does and returns it with the
// meta page bbolt would use: the valid one of the two with the higher
// txid.
func currentMeta(r io.ReaderAt, size int64) (meta, int64, error) {
	var buf [pageHeaderSize + metaSize]byte
	read := func(off int64) (meta, bool, error) {
		if off+int64(len(buf)) > size {
			return meta{}, false, nil
		}
		if _, err := r.ReadAt(buf[:], off); err != nil {
			return meta{}, false, fmt.Errorf("read meta page: %w", err)
		}
		m, ok := parseMeta(buf[pageHeaderSize:])
		return m, ok, nil
	}
	m0, ok0, err := read(0)
	if err != nil {
		return meta{}, 0, err
	}
	pageSize := int64(m0.pageSize)
	if !ok0 {
		// The first meta page is damaged: look for the second at each
		// page size bbolt tries.
		for ps := int64(minPageSize); ps <= maxPageSize; ps <<= 1 {
			m1, ok1, err := read(ps)
			if err != nil {
				return meta{}, 0, err
			}
			if ok1 {
				pageSize = int64(m1.pageSize)
				break
			}
		}
	}
	if pageSize < minPageSize || pageSize > maxPageSize {
		return meta{}, 0, damaged("no valid meta page")
	}
	m1, ok1, err := read(pageSize)
	if err != nil {
		return meta{}, 0, err
	}
	switch {
	case ok0 && ok1 && m1.txid > m0.txid, !ok0 && ok1:
		return m1, pageSize, nil
	case ok0:
		return m0, pageSize, nil
	}
	return meta{}, 0, damaged("no valid meta page")
}

// page reads page id, whose flags must be one of kinds, and marks it and
// its overflow pages used. The buffer belongs to depth and is valid until
// the next page read at that depth.
func (c *checker) page(id uint64, depth int, kinds ...uint16) ([]byte, uint16, error) {
	if id < 2 || id >= c.hwm {
		return nil, 0, damaged("reference to page %d, outside pages 2 to %d", id, c.hwm-1)
	}
	for len(c.bufs) <= depth {
		c.bufs = append(c.bufs, nil)
	}
	hdr := c.buffer(depth, pageHeaderSize)
	if _, err := c.r.ReadAt(hdr, int64(id*c.pageSize)); err != nil {
		return nil, 0, fmt.Errorf("read page %d: %w", id, err)
	}
	le := binary.LittleEndian
	flags := le.Uint16(hdr[8:])
	switch {
	case le.Uint64(hdr) != id:
		return nil, 0, damaged("page %d says it is page %d", id, le.Uint64(hdr))
	case !slices.Contains(kinds, flags):
		return nil, 0, damaged("page %d has flags %#x where one of %#x was expected", id, flags, kinds)
	}
	overflow := uint64(le.Uint32(hdr[12:]))
	if overflow >= c.hwm-id {
		return nil, 0, damaged("page %d runs over %d more pages, past the last page (%d)", id, overflow, c.hwm-1)
	}
	for p := id; p <= id+overflow; p++ {
		if c.used.has(p) {
			return nil, 0, damaged("page %d is reached twice", p)
		}
		if c.free.has(p) {
			return nil, 0, damaged("page %d is both in use and free", p)
		}
		c.used.set(p)
	}
	b := c.buffer(depth, int((overflow+1)*c.pageSize))
	if _, err := c.r.ReadAt(b, int64(id*c.pageSize)); err != nil {
		return nil, 0, fmt.Errorf("read page %d: %w", id, err)
	}
	return b, flags, nil
}

// buffer returns depth's buffer, n bytes long.
func (c *checker) buffer(depth, n int) []byte {
	if cap(c.bufs[depth]) < n {
		c.bufs[depth] = make([]byte, n)
	}
	return c.bufs[depth][:n]
}

// freelist checks a written freelist and notes the pages it frees.
func (c *checker) freelist(id uint64) error {
	b, _, err := c.page(id, 0, flagFreelist)
	if err != nil {
		return err
	}
	le := binary.LittleEndian
	count, ids := uint64(le.Uint16(b[10:])), b[pageHeaderSize:]
	if count == freelistOverrun {
		count, ids = le.Uint64(ids), ids[8:]
	}
	if count > uint64(len(ids))/8 {
		return damaged("freelist page %d counts %d pages but holds at most %d", id, count, len(ids)/8)
	}
	for i := range count {
		p := le.Uint64(ids[i*8:])
		switch {
		case p < 2 || p >= c.hwm:
			return damaged("freelist page %d frees page %d, outside pages 2 to %d", id, p, c.hwm-1)
		case c.free.has(p):
			return damaged("freelist page %d frees page %d twice", id, p)
		case c.used.has(p):
			return damaged("freelist page %d frees page %d, which is in use", id, p)
		}
		c.free.set(p)
	}
	return nil
}

// tree checks the bucket tree rooted at page id, whose keys must lie in
// [lo, hi) (nil: unbounded), and returns its first key (nil for an empty
// bucket). The key is valid until the next page read at depth. In the
// tree of the root bucket (root set), every record must be a bucket: bbolt
// writes nothing else there and hands its readers a nil bucket for
// anything else.
func (c *checker) tree(id uint64, depth int, root bool, lo, hi []byte) ([]byte, error) {
	if depth >= maxDepth {
		return nil, damaged("page %d is nested more than %d deep", id, maxDepth)
	}
	b, flags, err := c.page(id, depth, flagBranch, flagLeaf)
	if err != nil {
		return nil, err
	}
	if flags == flagLeaf {
		return c.leaf(fmt.Sprintf("page %d", id), b, depth, root, lo, hi)
	}
	count := int(binary.LittleEndian.Uint16(b[10:]))
	if count == 0 {
		return nil, damaged("branch page %d is empty", id)
	}
	elems, err := elements(fmt.Sprintf("branch page %d", id), b, count, false, lo, hi)
	if err != nil {
		return nil, err
	}
	for i, e := range elems {
		next := hi
		if i+1 < count {
			next = elems[i+1].key
		}
		first, err := c.tree(e.child, depth+1, root, e.key, next)
		if err != nil {
			return nil, err
		}
		// bbolt finds a child's element in its parent by the child's
		// first key when it writes the child back.
		if !bytes.Equal(first, e.key) {
			return nil, damaged("branch page %d: key %d is not the first key of page %d", id, i, e.child)
		}
	}
	return elems[0].key, nil
}

// leaf checks a leaf page (where names it in errors) and the buckets
// nested in it, and returns its first key. A leaf under a branch (lo set)
// is never empty: bbolt removes empty pages from a tree.
func (c *checker) leaf(where string, b []byte, depth int, root bool, lo, hi []byte) ([]byte, error) {
	count := int(binary.LittleEndian.Uint16(b[10:]))
	if count == 0 {
		if lo != nil {
			return nil, damaged("leaf %s is empty", where)
		}
		return nil, nil
	}
	elems, err := elements("leaf "+where, b, count, true, lo, hi)
	if err != nil {
		return nil, err
	}
	for i, e := range elems {
		if e.flags&leafFlagBucket == 0 {
			if root {
				return nil, damaged("leaf %s: element %d is a record in the root bucket", where, i)
			}
			continue
		}
		if len(e.value) < bucketHeaderSize {
			return nil, damaged("leaf %s: bucket %d has a %d-byte header", where, i, len(e.value))
		}
		if at := binary.LittleEndian.Uint64(e.value); at != 0 {
			if _, err := c.tree(at, depth+1, false, nil, nil); err != nil {
				return nil, err
			}
			continue
		}
		inline := e.value[bucketHeaderSize:]
		if len(inline) < pageHeaderSize {
			return nil, damaged("leaf %s: inline bucket %d is %d bytes", where, i, len(inline))
		}
		if f := binary.LittleEndian.Uint16(inline[8:]); f != flagLeaf {
			return nil, damaged("leaf %s: inline bucket %d has flags %#x", where, i, f)
		}
		if depth+1 >= maxDepth {
			return nil, damaged("leaf %s: buckets nested more than %d deep", where, maxDepth)
		}
		if _, err := c.leaf(fmt.Sprintf("%s, inline bucket %d", where, i), inline, depth+1, false, nil, nil); err != nil {
			return nil, err
		}
	}
	return elems[0].key, nil
}

// element is one element of a page, as read.
type element struct {
	flags      uint32 // leaf only
	child      uint64 // branch only
	key, value []byte
}

// elements reads the count elements of page b (leaf or branch) and checks
// them: the keys and values lie after the elements, one after another in
// element order (as bbolt writes them); keys are non-empty, strictly
// ascending and in [lo, hi); leaf flags are known.
func elements(where string, b []byte, count int, leaf bool, lo, hi []byte) ([]element, error) {
	// bbolt refuses to write a page of 0xFFFF elements or more.
	if count >= freelistOverrun || pageHeaderSize+count*elementSize > len(b) {
		return nil, damaged("%s: %d elements do not fit in %d bytes", where, count, len(b))
	}
	le := binary.LittleEndian
	out := make([]element, count)
	data := uint64(pageHeaderSize + count*elementSize) // where the next key starts
	for i := range out {
		at := pageHeaderSize + i*elementSize
		e := b[at : at+elementSize]
		var pos, ksize, vsize uint64
		if leaf {
			out[i].flags = le.Uint32(e)
			pos, ksize, vsize = uint64(le.Uint32(e[4:])), uint64(le.Uint32(e[8:])), uint64(le.Uint32(e[12:]))
			if out[i].flags&^leafFlagBucket != 0 {
				return nil, damaged("%s: element %d has flags %#x", where, i, out[i].flags)
			}
		} else {
			pos, ksize = uint64(le.Uint32(e)), uint64(le.Uint32(e[4:]))
			out[i].child = le.Uint64(e[8:])
		}
		start := uint64(at) + pos
		if start != data || ksize == 0 || start+ksize+vsize > uint64(len(b)) {
			return nil, damaged("%s: element %d (key %d bytes, value %d) is not where its data lies", where, i, ksize, vsize)
		}
		data = start + ksize + vsize
		out[i].key = b[start : start+ksize]
		out[i].value = b[start+ksize : data]
		k := out[i].key
		switch {
		case i > 0 && bytes.Compare(out[i-1].key, k) >= 0:
			return nil, damaged("%s: key %d is not above key %d", where, i, i-1)
		case lo != nil && bytes.Compare(k, lo) < 0:
			return nil, damaged("%s: key %d is below its parent's key", where, i)
		case hi != nil && bytes.Compare(k, hi) >= 0:
			return nil, damaged("%s: key %d is not below the next key of its parent", where, i)
		}
	}
	return out, nil
}

// File checks the database file at path. While it reads, it holds a
// shared lock on the file, the lock bbolt takes, so that it does not read
// a file another process is writing; ErrLocked says that another process
// has the file open for writing. An empty file passes: bbolt makes a new
// database of it.
func File(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := lockShared(f); err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return err
	}
	return Check(f, fi.Size())
}

// ErrLocked is returned by File when another process holds the file's
// write lock.
var ErrLocked = errors.New("the database is open in another process")

// bitmap is a set of page ids below a bound.
type bitmap []uint64

func newBitmap(n uint64) bitmap { return make(bitmap, (n+63)/64) }

func (b bitmap) has(i uint64) bool { return b[i/64]&(1<<(i%64)) != 0 }
func (b bitmap) set(i uint64)      { b[i/64] |= 1 << (i % 64) }
