package outbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/quicproquo/qpq/node/payload"
	"github.com/quicproquo/qpq/seal"
)

// waitLimit bounds how long a test waits for something that must happen;
// reaching it is a failure, never a measurement.
const waitLimit = 20 * time.Second

// fast backoffs keep retry tests quick without depending on timing.
var fast = Config{MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond}

// leakCheck verifies at the very end of the test, after every cleanup
// (including the stop of startRun), that no goroutine was left behind.
func leakCheck(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

func openDB(t testing.TB, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func tempDB(t testing.TB) (*bolt.DB, string) {
	path := filepath.Join(t.TempDir(), "node.db")
	db := openDB(t, path)
	t.Cleanup(func() { db.Close() })
	return db, path
}

func key(b byte) [RecipientSize]byte {
	var r [RecipientSize]byte
	r[0], r[31] = b, b
	return r
}

func item(r [RecipientSize]byte, n int) Item {
	return Item{
		Recipient:    r,
		Conversation: []byte("conv-" + strconv.Itoa(int(r[0]))),
		MessageID:    payload.NewID(),
		Data:         []byte(fmt.Sprintf("sealed %d for %d", n, r[0])),
	}
}

// results collects OnResult reports.
type results struct {
	ch chan Result
}

func newResults() *results { return &results{ch: make(chan Result, 1024)} }

func (r *results) onResult(res Result) { r.ch <- res }

func (r *results) next(t *testing.T) Result {
	t.Helper()
	select {
	case res := <-r.ch:
		return res
	case <-time.After(waitLimit):
		t.Fatal("no delivery result")
		return Result{}
	}
}

// startRun runs o until the test ends (or the returned stop is called) and
// checks that Run returns.
func startRun(t *testing.T, o *Outbox) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Run returned %v", err)
				}
			case <-time.After(waitLimit):
				t.Error("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// recorder is a Deliverer that records what it delivered, checks that one
// recipient never sees two concurrent deliveries, and fails as told.
type recorder struct {
	t    *testing.T
	fail func(it Item, call int) error // nil: always succeed

	mu        sync.Mutex // guards the fields below
	calls     int
	inflight  map[[RecipientSize]byte]bool
	delivered map[[RecipientSize]byte][]uint64
}

func newRecorder(t *testing.T, fail func(Item, int) error) *recorder {
	return &recorder{
		t:         t,
		fail:      fail,
		inflight:  make(map[[RecipientSize]byte]bool),
		delivered: make(map[[RecipientSize]byte][]uint64),
	}
}

func (r *recorder) Deliver(ctx context.Context, it Item) (string, error) {
	r.mu.Lock()
	if r.inflight[it.Recipient] {
		r.t.Errorf("two concurrent deliveries to recipient %d", it.Recipient[0])
	}
	r.inflight[it.Recipient] = true
	r.calls++
	call := r.calls
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.inflight[it.Recipient] = false
		r.mu.Unlock()
	}()
	if r.fail != nil {
		if err := r.fail(it, call); err != nil {
			return "", err
		}
	}
	r.mu.Lock()
	r.delivered[it.Recipient] = append(r.delivered[it.Recipient], it.Seq)
	r.mu.Unlock()
	if it.Recipient[0]%2 == 0 {
		return ViaDirect, nil
	}
	return ViaServer, nil
}

var _ Deliverer = (*recorder)(nil)

// newOutbox opens an outbox on a fresh database with cfg (the fast
// backoffs when it sets none) that delivers through a recorder failing as
// fail says, and collects its results.
func newOutbox(t *testing.T, fail func(Item, int) error, cfg Config) (*Outbox, *recorder, *results) {
	t.Helper()
	db, _ := tempDB(t)
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = fast.MinBackoff, fast.MaxBackoff
	}
	rec, res := newRecorder(t, fail), newResults()
	cfg.OnResult = res.onResult
	o, err := New(db, rec, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return o, rec, res
}

func pending(t *testing.T, o *Outbox) []Item {
	t.Helper()
	items, err := o.Pending()
	if err != nil {
		t.Fatal(err)
	}
	return items
}

func TestOrderPerRecipientWithFailures(t *testing.T) {
	leakCheck(t)
	// Every third call fails: retries interleave with other recipients'
	// deliveries, yet each recipient's items arrive in enqueue order.
	o, rec, res := newOutbox(t, func(_ Item, call int) error {
		if call%3 == 0 {
			return errors.New("peer unreachable")
		}
		return nil
	}, Config{})
	recipients := [][RecipientSize]byte{key(1), key(2), key(3)}
	want := map[[RecipientSize]byte][]uint64{}
	enqueue := func(n int) {
		for i := range n {
			for _, r := range recipients {
				it, err := o.Enqueue(item(r, i))
				if err != nil {
					t.Fatal(err)
				}
				want[r] = append(want[r], it.Seq)
			}
		}
	}
	enqueue(10) // before Run: picked up from disk
	stop := startRun(t, o)
	enqueue(10) // while running
	seen := map[uint64]bool{}
	for range 60 {
		got := res.next(t)
		if got.Err != nil || seen[got.Item.Seq] {
			t.Fatalf("result %+v (seen before: %v)", got, seen[got.Item.Seq])
		}
		seen[got.Item.Seq] = true
		if wantVia := map[bool]string{true: ViaDirect, false: ViaServer}[got.Item.Recipient[0]%2 == 0]; got.Via != wantVia {
			t.Fatalf("via %q, want %q", got.Via, wantVia)
		}
	}
	stop()
	for _, r := range recipients {
		if fmt.Sprint(rec.delivered[r]) != fmt.Sprint(want[r]) {
			t.Fatalf("recipient %d: delivered %v, want %v", r[0], rec.delivered[r], want[r])
		}
	}
	if p := pending(t, o); len(p) != 0 {
		t.Fatalf("%d items left after delivery", len(p))
	}
}

func TestRetriesUntilDelivered(t *testing.T) {
	leakCheck(t)
	o, _, res := newOutbox(t, func(_ Item, call int) error {
		if call <= 3 {
			return errors.New("home server down")
		}
		return nil
	}, Config{})
	startRun(t, o)
	it, err := o.Enqueue(item(key(1), 0))
	if err != nil {
		t.Fatal(err)
	}
	got := res.next(t)
	if got.Err != nil || got.Attempts != 4 || got.Item.Seq != it.Seq || got.Via != ViaServer {
		t.Fatalf("result %+v, want delivered on attempt 4", got)
	}
	if !bytes.Equal(got.Item.Data, it.Data) || got.Item.MessageID != it.MessageID ||
		!bytes.Equal(got.Item.Conversation, it.Conversation) || !got.Item.Created.Equal(it.Created) {
		t.Fatal("delivered item differs from the enqueued one")
	}
}

// TestKick: with a backoff far beyond the test's limit, only Kick can make
// the second attempt happen.
func TestKick(t *testing.T) {
	for _, all := range []bool{false, true} {
		t.Run(map[bool]string{false: "Kick", true: "KickAll"}[all], func(t *testing.T) {
			leakCheck(t)
			db, _ := tempDB(t)
			attempted := make(chan struct{}, 10)
			rec := newRecorder(t, func(_ Item, call int) error {
				attempted <- struct{}{}
				if call == 1 {
					return errors.New("no link yet")
				}
				return nil
			})
			res := newResults()
			o, _ := New(db, rec, Config{MinBackoff: time.Hour, OnResult: res.onResult})
			startRun(t, o)
			if _, err := o.Enqueue(item(key(2), 0)); err != nil {
				t.Fatal(err)
			}
			<-attempted
			// Kicking a recipient with nothing pending is harmless.
			o.Kick(key(9))
			if all {
				o.KickAll()
			} else {
				o.Kick(key(2))
			}
			got := res.next(t)
			if got.Err != nil || got.Attempts != 2 {
				t.Fatalf("result %+v, want delivered on attempt 2", got)
			}
		})
	}
}

// TestRestartMidRetry: items that were being retried when the node stopped
// are reloaded and delivered, in order, by the next run.
func TestRestartMidRetry(t *testing.T) {
	leakCheck(t)
	db, path := tempDB(t)
	failing := make(chan struct{}, 100)
	down := newRecorder(t, func(Item, int) error {
		failing <- struct{}{}
		return errors.New("offline")
	})
	o, _ := New(db, down, fast)
	stop := startRun(t, o)
	var want []Item
	for i := range 5 {
		it, err := o.Enqueue(item(key(3), i))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, it)
	}
	for range 3 { // mid-retry: several attempts have failed
		<-failing
	}
	stop()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db = openDB(t, path)
	defer db.Close()
	res := newResults()
	cfg := fast
	cfg.OnResult = res.onResult
	up := newRecorder(t, nil)
	o, err := New(db, up, cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := pending(t, o)
	if len(got) != len(want) {
		t.Fatalf("%d items after restart, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Seq != want[i].Seq || !bytes.Equal(got[i].Data, want[i].Data) ||
			got[i].MessageID != want[i].MessageID || !got[i].Created.Equal(want[i].Created) {
			t.Fatalf("item %d after restart: %+v, want %+v", i, got[i], want[i])
		}
	}
	stop = startRun(t, o)
	for i := range want {
		if r := res.next(t); r.Item.Seq != want[i].Seq || r.Err != nil {
			t.Fatalf("result %d: %+v", i, r)
		}
	}
	stop()
	if fmt.Sprint(up.delivered[key(3)]) != fmt.Sprint(seqs(want)) {
		t.Fatalf("delivered %v, want %v", up.delivered[key(3)], seqs(want))
	}
	// New items after a restart sort after the old ones.
	it, err := o.Enqueue(item(key(3), 9))
	if err != nil || it.Seq <= want[len(want)-1].Seq {
		t.Fatalf("seq after restart %d, last before %d (%v)", it.Seq, want[len(want)-1].Seq, err)
	}
}

func seqs(items []Item) []uint64 {
	var s []uint64
	for _, it := range items {
		s = append(s, it.Seq)
	}
	return s
}

// TestRemovedOnlyAfterSuccess: while a delivery is in progress, and after it
// fails or is cut short by shutdown, the item is still stored.
func TestRemovedOnlyAfterSuccess(t *testing.T) {
	leakCheck(t)
	db, _ := tempDB(t)
	var o *Outbox
	inDeliver := make(chan int, 1)
	block := newRecorder(t, func(it Item, _ int) error {
		items, err := o.Pending()
		if err != nil {
			t.Error(err)
		}
		inDeliver <- len(items)
		return errors.New("peer vanished mid-send")
	})
	o, _ = New(db, block, Config{MinBackoff: time.Hour})
	stop := startRun(t, o)
	if _, err := o.Enqueue(item(key(4), 0)); err != nil {
		t.Fatal(err)
	}
	if n := <-inDeliver; n != 1 {
		t.Fatalf("%d items stored during delivery, want 1", n)
	}
	stop()
	if n := len(pending(t, o)); n != 1 {
		t.Fatalf("%d items stored after a failed delivery and shutdown, want 1", n)
	}

	// Shutdown in the middle of a Deliver call.
	started := make(chan struct{})
	o2, _ := New(db, DeliverFunc(func(ctx context.Context, _ Item) (string, error) {
		close(started)
		<-ctx.Done() // a send in flight, cut short
		return "", ctx.Err()
	}), Config{})
	stop = startRun(t, o2)
	<-started
	stop()
	if n := len(pending(t, o2)); n != 1 {
		t.Fatalf("%d items stored after shutdown mid-delivery, want 1", n)
	}
}

func TestPermanentErrorDropsItem(t *testing.T) {
	leakCheck(t)
	bad := errors.New("recipient has no account")
	o, _, res := newOutbox(t, func(it Item, _ int) error {
		if bytes.HasPrefix(it.Data, []byte("sealed 0")) {
			return fmt.Errorf("server: %w", Permanent(bad))
		}
		return nil
	}, Config{})
	startRun(t, o)
	first, _ := o.Enqueue(item(key(5), 0))
	second, _ := o.Enqueue(item(key(5), 1))
	r := res.next(t)
	if r.Item.Seq != first.Seq || !errors.Is(r.Err, bad) || !IsPermanent(r.Err) || r.Attempts != 1 {
		t.Fatalf("first result %+v, want dropped with the permanent error", r)
	}
	if r = res.next(t); r.Item.Seq != second.Seq || r.Err != nil {
		t.Fatalf("second result %+v, want delivered", r)
	}
	if IsPermanent(bad) || IsPermanent(nil) {
		t.Fatal("IsPermanent of an unmarked error")
	}
}

func TestRunTwice(t *testing.T) {
	leakCheck(t)
	db, _ := tempDB(t)
	res := newResults()
	o, _ := New(db, newRecorder(t, nil), Config{OnResult: res.onResult})
	stop := startRun(t, o)
	// A delivered item proves the first Run is active.
	if _, err := o.Enqueue(item(key(6), 0)); err != nil {
		t.Fatal(err)
	}
	res.next(t)
	if err := o.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Fatalf("second Run: %v, want ErrRunning", err)
	}
	stop()
	// Enqueue works while stopped; the next Run delivers.
	if _, err := o.Enqueue(item(key(6), 1)); err != nil {
		t.Fatal(err)
	}
	startRun(t, o)
	if r := res.next(t); r.Err != nil || r.Item.Seq != 2 {
		t.Fatalf("result after rerun: %+v", r)
	}
}

func TestEnqueueRejects(t *testing.T) {
	db, _ := tempDB(t)
	o, _ := New(db, newRecorder(t, nil), Config{})
	good := item(key(7), 0)
	for _, tc := range []struct {
		name string
		mod  func(*Item)
	}{
		{"no recipient", func(it *Item) { it.Recipient = [RecipientSize]byte{} }},
		{"empty envelope", func(it *Item) { it.Data = nil }},
		{"envelope too large", func(it *Item) { it.Data = make([]byte, seal.MaxSealedSize+1) }},
		{"conversation too long", func(it *Item) { it.Conversation = make([]byte, MaxConversationSize+1) }},
	} {
		it := good
		tc.mod(&it)
		if _, err := o.Enqueue(it); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", tc.name, err)
		}
	}
	if n := len(pending(t, o)); n != 0 {
		t.Fatalf("%d invalid items stored", n)
	}
	// The limits themselves are accepted, and an empty conversation id.
	edge := good
	edge.Data = make([]byte, MaxDataSize)
	edge.Conversation = make([]byte, MaxConversationSize)
	if _, err := o.Enqueue(edge); err != nil {
		t.Fatal(err)
	}
	edge.Conversation = nil
	if _, err := o.Enqueue(edge); err != nil {
		t.Fatal(err)
	}
}

func TestEnqueueCopiesAndKeepsCreated(t *testing.T) {
	db, _ := tempDB(t)
	o, _ := New(db, newRecorder(t, nil), Config{})
	it := item(key(8), 0)
	it.Created = time.Date(2026, 3, 1, 10, 0, 0, 5, time.UTC)
	stored, err := o.Enqueue(it)
	if err != nil {
		t.Fatal(err)
	}
	it.Data[0] = 'X'
	got := pending(t, o)
	if len(got) != 1 || got[0].Data[0] != 's' || !got[0].Created.Equal(it.Created) || got[0].Seq != stored.Seq {
		t.Fatalf("stored %+v", got)
	}
	zero := item(key(8), 1)
	if s, err := o.Enqueue(zero); err != nil || s.Created.IsZero() {
		t.Fatalf("zero Created not set: %v", err)
	}
}

func TestBackoff(t *testing.T) {
	o := &Outbox{cfg: Config{MinBackoff: 100 * time.Millisecond, MaxBackoff: 3 * time.Second}}
	for n, want := range map[int]time.Duration{
		1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond,
		5: 1600 * time.Millisecond, 6: 3 * time.Second, 40: 3 * time.Second, 1000: 3 * time.Second,
	} {
		for range 50 {
			if d := o.backoff(n); d < want/2 || d > want {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", n, d, want/2, want)
			}
		}
	}
}

func TestDecodeRejectsCorrupt(t *testing.T) {
	it := item(key(1), 0)
	it.Created = time.Now()
	k, v := itemKey(it.Recipient, 7), encodeItem(it)
	if got, err := decodeItem(k, v); err != nil || got.Seq != 7 || !bytes.Equal(got.Data, it.Data) {
		t.Fatalf("decode: %+v, %v", got, err)
	}
	for _, tc := range []struct {
		name string
		k, v []byte
	}{
		{"short key", k[:10], v},
		{"empty value", k, nil},
		{"unknown format", k, append([]byte{9}, v[1:]...)},
		{"conversation past end", k, append(bytes.Clone(v[:valueHeaderSize-1]), 200, 1, 2)},
		{"no envelope", k, append(bytes.Clone(v[:valueHeaderSize-1]), 0)},
	} {
		if _, err := decodeItem(tc.k, tc.v); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", tc.name, err)
		}
	}
}

// FuzzDecodeItem: a damaged database never makes the decoder panic, and
// what it accepts re-encodes to the same bytes.
func FuzzDecodeItem(f *testing.F) {
	it := item(key(1), 0)
	it.Created = time.Unix(1_780_000_000, 42)
	f.Add(itemKey(it.Recipient, 1), encodeItem(it))
	it.Conversation = nil
	f.Add(itemKey(it.Recipient, 2), encodeItem(it))
	f.Fuzz(func(t *testing.T, k, v []byte) {
		got, err := decodeItem(k, v)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeItem(got), v) || !bytes.Equal(itemKey(got.Recipient, got.Seq), k) {
			t.Fatal("decode then encode changed the bytes")
		}
	})
}

// crashEnv names the database a re-executed test binary works on in
// TestCrashMidDelivery.
const crashEnv = "QPQ_OUTBOX_CRASH_DB"

// TestCrashMidDelivery runs an outbox in a child process that dies (os.Exit,
// no Close, no deferred cleanup) in the middle of delivering its fourth
// item. Afterwards the database holds exactly the items that were not
// delivered, including the one in flight, intact.
func TestCrashMidDelivery(t *testing.T) {
	if path := os.Getenv(crashEnv); path != "" {
		crashChild(path)
		return
	}
	path := filepath.Join(t.TempDir(), "node.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashMidDelivery$")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("child: %v\n%s", err, out)
	}
	db := openDB(t, path)
	defer db.Close()
	o, err := New(db, newRecorder(t, nil), Config{})
	if err != nil {
		t.Fatal(err)
	}
	got := pending(t, o)
	if fmt.Sprint(seqs(got)) != "[4 5 6 7 8 9 10]" {
		t.Fatalf("after crash: seqs %v, want [4 … 10]", seqs(got))
	}
	for _, it := range got {
		if want := fmt.Sprintf("sealed %d for 1", it.Seq-1); string(it.Data) != want {
			t.Fatalf("item %d: sealed %q, want %q", it.Seq, it.Data, want)
		}
	}
}

func crashChild(path string) {
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		os.Exit(1)
	}
	o, err := New(db, DeliverFunc(func(_ context.Context, it Item) (string, error) {
		if it.Seq == 4 {
			os.Exit(3) // the process dies while the item is on the wire
		}
		return ViaDirect, nil
	}), Config{})
	if err != nil {
		os.Exit(1)
	}
	for i := range 10 {
		if _, err := o.Enqueue(item(key(1), i)); err != nil {
			os.Exit(1)
		}
	}
	o.Run(context.Background())
	os.Exit(1) // not reached: Run blocks until the exit in Deliver
}

// BenchmarkEnqueue is the cost of one durable enqueue (one bbolt commit with
// fsync) of a 1 KiB envelope.
func BenchmarkEnqueue(b *testing.B) {
	db, _ := tempDB(b)
	o, err := New(db, DeliverFunc(func(context.Context, Item) (string, error) { return ViaDirect, nil }), Config{})
	if err != nil {
		b.Fatal(err)
	}
	it := Item{Recipient: key(1), Data: make([]byte, 1024), MessageID: payload.NewID()}
	for b.Loop() {
		if _, err := o.Enqueue(it); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEnqueueToDelivered is enqueue → Deliver → removal → OnResult for
// 1 KiB envelopes to one recipient: the outbox's share of a send's latency.
func BenchmarkEnqueueToDelivered(b *testing.B) {
	db, _ := tempDB(b)
	done := make(chan Result, 1)
	o, err := New(db, DeliverFunc(func(context.Context, Item) (string, error) { return ViaDirect, nil }),
		Config{OnResult: func(r Result) { done <- r }})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { o.Run(ctx); close(ran) }()
	defer func() { cancel(); <-ran }()
	it := Item{Recipient: key(1), Data: make([]byte, 1024), MessageID: payload.NewID()}
	for b.Loop() {
		if _, err := o.Enqueue(it); err != nil {
			b.Fatal(err)
		}
		<-done
	}
}

// BenchmarkBoltPutBaseline is the bare baseline for BenchmarkEnqueue: one
// bbolt commit of a 1 KiB value under a sequential key, nothing else.
func BenchmarkBoltPutBaseline(b *testing.B) {
	db, _ := tempDB(b)
	v := make([]byte, 1024+valueHeaderSize)
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists([]byte("bare"))
		return err
	}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		err := db.Update(func(tx *bolt.Tx) error {
			bk := tx.Bucket([]byte("bare"))
			seq, _ := bk.NextSequence()
			return bk.Put(itemKey(key(1), seq), v)
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// TestEnqueueTx: items enqueued in a caller's transaction commit or roll
// back with it, and delivery starts only once it committed.
func TestEnqueueTx(t *testing.T) {
	leakCheck(t)
	o, _, res := newOutbox(t, nil, Config{})
	db := o.db
	startRun(t, o)
	other := []byte("other")
	mustCreate := func(tx *bolt.Tx) {
		if _, err := tx.CreateBucketIfNotExists(other); err != nil {
			t.Fatal(err)
		}
	}

	// Rolled back: neither the caller's write nor the items remain.
	boom := errors.New("boom")
	err := db.Update(func(tx *bolt.Tx) error {
		mustCreate(tx)
		if _, err := o.EnqueueTx(tx, item(key(1), 0), item(key(2), 0)); err != nil {
			t.Fatal(err)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update: %v", err)
	}
	if p, _ := o.Pending(); len(p) != 0 {
		t.Fatalf("%d items pending after a rollback", len(p))
	}

	// Committed: both the caller's write and the items, then delivery.
	var stored []Item
	err = db.Update(func(tx *bolt.Tx) error {
		mustCreate(tx)
		var err error
		stored, err = o.EnqueueTx(tx, item(key(1), 1), item(key(2), 1), item(key(1), 2))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if stored[0].Seq == 0 || stored[2].Seq <= stored[0].Seq || stored[0].Created.IsZero() {
		t.Fatalf("stored items %+v lack seq or time", stored)
	}
	got := map[uint64]bool{}
	for range 3 {
		r := res.next(t)
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		got[r.Item.Seq] = true
	}
	for _, it := range stored {
		if !got[it.Seq] {
			t.Fatalf("item %d not delivered", it.Seq)
		}
	}
	if err := db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(other) == nil {
			return errors.New("caller's bucket missing")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := o.EnqueueTx(nil, Item{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("EnqueueTx of an empty item: %v", err)
	}
}

// TestOnWaiting: an item that keeps failing is reported once per run,
// once it has waited WaitingAfter in this run; failures cured before then
// are not reported, whatever the item's age.
func TestOnWaiting(t *testing.T) {
	leakCheck(t)
	const after = 300 * time.Millisecond
	type report struct {
		seq uint64
		err error
		at  time.Time
	}
	reports := make(chan report, 16)
	var mu sync.Mutex
	cured := 0 // failures of the cured item so far
	o, rec, res := newOutbox(t, func(it Item, _ int) error {
		switch string(it.Data) {
		case "fail":
			return errors.New("no path")
		case "cured":
			mu.Lock()
			defer mu.Unlock()
			if cured++; cured <= 2 {
				return errors.New("a blip")
			}
		}
		return nil
	}, Config{WaitingAfter: after, OnWaiting: func(it Item, err error) { reports <- report{it.Seq, err, time.Now()} }})

	// Both were made long ago (left from an earlier run): they count as
	// waiting from the start of this run.
	stuck := Item{Recipient: key(1), Data: []byte("fail"), Created: time.Now().Add(-time.Hour)}
	stuck, err := o.Enqueue(stuck)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Enqueue(Item{Recipient: key(2), Data: []byte("cured"), Created: time.Now().Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	stop := startRun(t, o)
	if r := res.next(t); r.Item.Recipient != key(2) || r.Err != nil {
		t.Fatalf("result %+v, want the cured item delivered", r)
	}
	select {
	case r := <-reports:
		if r.seq != stuck.Seq || r.err == nil || r.err.Error() != "no path" {
			t.Fatalf("reported %+v, want seq %d with its error", r, stuck.Seq)
		}
		if r.at.Sub(begin) < after {
			t.Fatalf("reported %v after Run began, before WaitingAfter", r.at.Sub(begin))
		}
	case <-time.After(waitLimit):
		t.Fatal("the stuck item was not reported")
	}
	calls := func() int {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.calls
	}
	for then := calls(); calls() < then+20; { // it fails many times more
		time.Sleep(time.Millisecond)
	}
	stop()
	if len(reports) != 0 {
		t.Fatalf("%d more reports, want the one", len(reports))
	}
}

// TestUndelivered lists each application message of a conversation with
// the recipients it has yet to reach.
func TestUndelivered(t *testing.T) {
	leakCheck(t)
	reached, away := key(2), key(3)
	o, _, res := newOutbox(t, func(it Item, _ int) error {
		if it.Recipient == away {
			return errors.New("no path")
		}
		return nil
	}, Config{})
	conv := []byte("group")
	msg := payload.NewID()
	var items []Item
	for _, r := range [][RecipientSize]byte{reached, away} {
		items = append(items, Item{Recipient: r, Conversation: conv, MessageID: msg, Data: []byte("m")})
	}
	items = append(items,
		Item{Recipient: away, Conversation: conv, Data: []byte("a commit")},                                  // no message id
		Item{Recipient: away, Conversation: []byte("other"), MessageID: payload.NewID(), Data: []byte("m2")}, // another conversation
	)
	for _, it := range items {
		if _, err := o.Enqueue(it); err != nil {
			t.Fatal(err)
		}
	}
	check := func(want ...[RecipientSize]byte) {
		t.Helper()
		got, err := o.Undelivered(conv)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || fmt.Sprint(got[msg]) != fmt.Sprint(want) {
			t.Fatalf("undelivered %v, want %v for the one message", got, want)
		}
	}
	check(reached, away)
	startRun(t, o)
	if r := res.next(t); r.Item.Recipient != reached || r.Err != nil {
		t.Fatalf("result %+v", r)
	}
	check(away)
}

// TestOnWaitingWhileSlow: an attempt that runs for WaitingAfter is
// reported while it runs, once, and its item is delivered when it ends.
func TestOnWaitingWhileSlow(t *testing.T) {
	leakCheck(t)
	release := make(chan struct{})
	reports := make(chan error, 4)
	o, _, res := newOutbox(t, func(Item, int) error {
		<-release
		return nil
	}, Config{WaitingAfter: 20 * time.Millisecond, OnWaiting: func(_ Item, err error) { reports <- err }})
	startRun(t, o)
	if _, err := o.Enqueue(item(key(1), 0)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-reports:
		if !errors.Is(err, ErrNoAnswerYet) {
			t.Fatalf("reported %v, want ErrNoAnswerYet", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("the slow attempt was not reported")
	}
	if len(res.ch) != 0 {
		t.Fatal("a result before the attempt ended")
	}
	close(release)
	if r := res.next(t); r.Err != nil {
		t.Fatalf("result %+v", r)
	}
	if len(reports) != 0 {
		t.Fatalf("%d more reports", len(reports))
	}
}
