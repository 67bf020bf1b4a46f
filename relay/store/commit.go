package store

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
)

// committer runs write functions in shared transactions (group commit).
//
// It keeps bbolt's DB.Batch contract — functions share a transaction, a
// function that fails is taken out and run again alone, so every function
// must be idempotent and assign its results afresh on each run — but not
// its timer: DB.Batch holds each batch open for MaxBatchDelay, and Go
// timers below a millisecond fire after about one millisecond on an idle
// Linux host (measured: a 200 µs delay made every write take 1.4 ms). Here
// one goroutine commits whatever is waiting the moment the previous
// commit is done: a lone write starts at once, and writes that arrive
// during a commit (fsync) all share the next one.
type committer struct {
	db       *bbolt.DB
	maxBatch int

	mu      sync.Mutex // guards pending, closed and sending on or closing wake
	pending []commitCall
	closed  bool
	wake    chan struct{} // capacity 1: a commit is wanted
	done    chan struct{} // closed when run returns

	// Totals since open, for CommitStats.
	nCommits, nWrites, nanos atomic.Int64
}

// CommitStats are the group commit's totals since the store was opened:
// how many transactions were committed, how many write functions they
// carried, and the time spent in transactions (building and syncing them,
// also those rolled back because a function failed). Writes/Commits is
// the mean batch; Time/Commits the mean commit latency, which every
// acknowledged write waits for at least once.
type CommitStats struct {
	Commits, Writes int64
	Time            time.Duration
}

func (c *committer) stats() CommitStats {
	return CommitStats{Commits: c.nCommits.Load(), Writes: c.nWrites.Load(), Time: time.Duration(c.nanos.Load())}
}

type commitCall struct {
	fn  func(*bbolt.Tx) error
	err chan error
}

func newCommitter(db *bbolt.DB, maxBatch int) *committer {
	c := &committer{db: db, maxBatch: maxBatch, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go c.run()
	return c
}

// do runs fn in a group commit and returns once its transaction is on
// disk, with fn's error or the commit's.
func (c *committer) do(fn func(*bbolt.Tx) error) error { return <-c.submit(fn) }

// submit queues fn for a group commit and returns at once; the channel
// yields fn's error or the commit's once its transaction is on disk.
// Functions submitted one after another run in that order (a function
// that fails runs again alone, after the others of its batch).
func (c *committer) submit(fn func(*bbolt.Tx) error) <-chan error {
	call := commitCall{fn: fn, err: make(chan error, 1)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		call.err <- ErrClosed
		return call.err
	}
	c.pending = append(c.pending, call)
	select { // under mu, so close cannot close wake in between
	case c.wake <- struct{}{}:
	default: // a wake-up is pending already
	}
	c.mu.Unlock()
	return call.err
}

// close commits what is pending, stops the goroutine and waits for it.
func (c *committer) close() {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.wake)
	}
	c.mu.Unlock()
	<-c.done
}

func (c *committer) run() {
	defer close(c.done)
	for range c.wake {
		for {
			c.mu.Lock()
			n := min(len(c.pending), c.maxBatch)
			batch := c.pending[:n:n]
			c.pending = c.pending[n:]
			c.mu.Unlock()
			if n == 0 {
				break
			}
			c.commit(batch)
		}
	}
}

// commit runs batch in one transaction. A function that fails is taken
// out, the rest run again, and the failed one then runs alone in its own
// transaction, like DB.Batch.
func (c *committer) commit(batch []commitCall) {
	var solo []commitCall
	for len(batch) > 0 {
		failed := -1
		err := c.update(len(batch), func(tx *bbolt.Tx) error {
			for i, call := range batch {
				if err := safeCall(call.fn, tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed >= 0 {
			solo = append(solo, batch[failed])
			batch = append(batch[:failed:failed], batch[failed+1:]...)
			continue
		}
		for _, call := range batch {
			call.err <- err
		}
		break
	}
	for _, call := range solo {
		call.err <- c.update(1, func(tx *bbolt.Tx) error { return safeCall(call.fn, tx) })
	}
}

// update is db.Update, counted in the stats as one commit of n writes
// if it commits; its time counts either way.
func (c *committer) update(n int, fn func(*bbolt.Tx) error) error {
	t0 := time.Now()
	err := c.db.Update(fn)
	c.nanos.Add(int64(time.Since(t0)))
	if err == nil {
		c.nCommits.Add(1)
		c.nWrites.Add(int64(n))
	}
	return err
}

var errPanicked = errors.New("store: write function panicked")

func safeCall(fn func(*bbolt.Tx) error, tx *bbolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v", errPanicked, p)
		}
	}()
	return fn(tx)
}
