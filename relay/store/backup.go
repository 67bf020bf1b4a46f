package store

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"time"

	"go.etcd.io/bbolt"
)

// Backup writes a copy of the database file to w as it was at one moment,
// while writes go on: a read transaction holds that moment, so the copy is
// consistent without stopping the server. size is called with the copy's
// length before its first byte is written. It returns the bytes written.
func (s *Store) Backup(w io.Writer, size func(int64)) (int64, error) {
	var n int64
	err := s.view(func(tx *bbolt.Tx) error {
		if size != nil {
			size(tx.Size())
		}
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// CheckFile checks a database file that no store has open, such as a
// backup: that bbolt opens it (its meta pages carry checksums), that it
// holds every page they count, that every bucket and record in it can be
// read, and that it is a store of this
// layout. It opens the file read-only and changes nothing. (bbolt's own
// Tx.Check rebuilds the freelist of a file like ours in a goroutine of
// its own, where a damaged page panics beyond recovery; reading every
// record finds such a page in a goroutine that can recover.)
//
// It is meant for copies this project's servers wrote, against a copy cut
// short or damaged on its way. It is not a validator of hostile files: a
// branch page made to point at itself sends bbolt's cursor round forever.
func CheckFile(path string) error {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("store: open %s: %w", path, err)
	}
	defer db.Close()
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	err = db.View(func(tx *bbolt.Tx) error {
		if fi.Size() < tx.Size() {
			return fmt.Errorf("store: %s is truncated: %d bytes of %d", path, fi.Size(), tx.Size())
		}
		if err := readAll(tx); err != nil {
			return fmt.Errorf("store: %s is damaged: %w", path, err)
		}
		for _, name := range bucketNames {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("store: %s is not a home server database (no %q bucket)", path, name)
			}
		}
		if v := tx.Bucket(bMeta).Get(metaLayout); !bytes.Equal(v, layoutVersion) {
			return fmt.Errorf("store: %s has data layout version %v, this build reads %v", path, v, layoutVersion)
		}
		return nil
	})
	return err
}

// readAll reads every key and value of every bucket, turning bbolt's
// panic on a page it cannot read into an error.
func readAll(tx *bbolt.Tx) (err error) {
	// A page the file does not hold faults in the mapping: a panic here,
	// not the end of the process.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	var walk func(b *bbolt.Bucket) error
	walk = func(b *bbolt.Bucket) error {
		return b.ForEach(func(k, v []byte) error {
			if v == nil {
				return walk(b.Bucket(k))
			}
			return nil
		})
	}
	return tx.ForEach(func(_ []byte, b *bbolt.Bucket) error { return walk(b) })
}
