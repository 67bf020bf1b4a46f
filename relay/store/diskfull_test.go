package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/quicproquo/qpq/internal/smallfs"
)

// TestDiskFull fills the file system under the store: an enqueue that
// cannot be written fails (it is not acknowledged), every enqueue
// acknowledged before stays readable with its seq, and once space is
// freed the store goes on — in the same process and after a reopen —
// with seqs above the last one acknowledged. Needs root for a small
// tmpfs of its own.
func TestDiskFull(t *testing.T) {
	dir := smallfs.Dir(t, 4<<20)
	// A file taking a little of the space, to give it back later.
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	s, err := Open(data, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	from, to := key(1), key(2)
	in := Inbox{Recipient: to}
	payload := bytes.Repeat([]byte{7}, 1024)

	// Eight writers at a time, so that a failing commit carries several.
	var (
		mu      sync.Mutex
		acked   []uint64
		fails   int
		failure error
	)
	for round := 0; fails == 0 && round < 10000; round++ {
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				seqs, err := s.Enqueue(from, []Key{to}, ChannelID{}, payload)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					fails++
					failure = err
					return
				}
				acked = append(acked, seqs[0])
			}()
		}
		wg.Wait()
	}
	if fails == 0 {
		t.Fatal("the file system never filled up")
	}
	t.Logf("%d enqueues acknowledged before the disk was full; then: %v", len(acked), failure)
	if !errors.Is(failure, syscall.ENOSPC) {
		t.Errorf("the failed enqueue says %v, want ENOSPC", failure)
	}
	check := func(s *Store, want []uint64) {
		t.Helper()
		envs, err := s.Peek(in, 0, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		got := map[uint64]bool{}
		for _, e := range envs {
			if !bytes.Equal(e.Data, payload) {
				t.Fatalf("message %d changed", e.Seq)
			}
			got[e.Seq] = true
		}
		for _, seq := range want {
			if !got[seq] {
				t.Fatalf("acknowledged message %d is gone", seq)
			}
		}
		if len(envs) != len(want) {
			t.Fatalf("%d messages stored, %d acknowledged", len(envs), len(want))
		}
	}
	check(s, acked)
	last := acked[0]
	for _, seq := range acked {
		last = max(last, seq)
	}

	// Space comes back: the same store goes on.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	seq := enqueue1(t, s, from, to, ChannelID{}, string(payload))
	if seq <= last {
		t.Fatalf("seq %d after the disk was full, want above %d", seq, last)
	}
	acked = append(acked, seq)
	check(s, acked)
	s.Close()

	s, err = Open(data, Options{})
	if err != nil {
		t.Fatal(err)
	}
	check(s, acked)
	if next := enqueue1(t, s, from, to, ChannelID{}, "after"); next <= seq {
		t.Fatalf("seq %d after reopening, want above %d", next, seq)
	}
}
