package store

import (
	"bytes"
	"fmt"
	"io"
	"time"

	"go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/internal/boltcheck"
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
// backup: that its pages are sound (package boltcheck: every page bbolt
// can reach lies in the file, is reached once and holds what bbolt
// expects), that bbolt opens it, and that it is a store of this layout.
// It opens the file read-only and changes nothing.
func CheckFile(path string) error {
	if err := boltcheck.File(path); err != nil {
		return fmt.Errorf("store: %s: %w", path, err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("store: open %s: %w", path, err)
	}
	defer db.Close()
	return db.View(func(tx *bbolt.Tx) error {
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
}
