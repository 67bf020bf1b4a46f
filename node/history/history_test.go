package history

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/quicproquo/qpq/node/payload"
)

func openDB(t testing.TB, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func newHistory(t testing.TB) (*History, *bolt.DB, string) {
	path := filepath.Join(t.TempDir(), "node.db")
	db := openDB(t, path)
	t.Cleanup(func() { db.Close() })
	h, err := New(db)
	if err != nil {
		t.Fatal(err)
	}
	return h, db, path
}

var (
	alice = [SenderSize]byte{0xa1}
	bob   = [SenderSize]byte{0xb0}
)

func msg(conv string, text string) Message {
	return Message{
		Conversation: []byte(conv),
		ID:           payload.NewID(),
		Sender:       alice,
		Text:         text,
		Time:         time.UnixMilli(1_780_000_000_123),
		Via:          "direct",
	}
}

func mustAppend(t *testing.T, h *History, m Message) uint64 {
	t.Helper()
	seq, dup, err := h.Append(m)
	if err != nil || dup {
		t.Fatalf("append %q: seq %d, dup %v, err %v", m.Text, seq, dup, err)
	}
	return seq
}

func texts(ms []Message) string {
	var s []string
	for _, m := range ms {
		s = append(s, m.Text)
	}
	return strings.Join(s, ",")
}

func TestAppendAndLast(t *testing.T) {
	h, _, _ := newHistory(t)
	for i := range 10 {
		m := msg("dm-bob", fmt.Sprint(i))
		if seq := mustAppend(t, h, m); seq != uint64(i+1) {
			t.Fatalf("seq %d, want %d", seq, i+1)
		}
	}
	mustAppend(t, h, msg("group", "other conversation"))
	for _, tc := range []struct {
		n    int
		want string
	}{
		{3, "7,8,9"},
		{10, "0,1,2,3,4,5,6,7,8,9"},
		{100, "0,1,2,3,4,5,6,7,8,9"},
		{1, "9"},
		{0, ""},
		{-1, ""},
	} {
		got, err := h.Last([]byte("dm-bob"), tc.n)
		if err != nil {
			t.Fatal(err)
		}
		if texts(got) != tc.want {
			t.Fatalf("Last(%d) = %q, want %q", tc.n, texts(got), tc.want)
		}
		for i := 1; i < len(got); i++ {
			if got[i].Seq != got[i-1].Seq+1 {
				t.Fatalf("Last(%d): seqs not consecutive", tc.n)
			}
		}
	}
	if got, err := h.Last([]byte("nobody"), 5); err != nil || len(got) != 0 {
		t.Fatalf("unknown conversation: %v, %v", got, err)
	}
	if got, err := h.Last(nil, 5); err != nil || len(got) != 0 {
		t.Fatalf("empty conversation id: %v, %v", got, err)
	}
}

func TestFieldsRoundTrip(t *testing.T) {
	h, _, _ := newHistory(t)
	m := Message{
		Conversation: []byte{0, 1, 2, 0xff},
		ID:           payload.NewID(),
		Sender:       bob,
		Text:         "grüße 👋\nline two",
		Time:         time.Date(2026, 5, 4, 3, 2, 1, 987_654_321, time.UTC),
		Via:          "server",
	}
	seq := mustAppend(t, h, m)
	got, err := h.Last(m.Conversation, 1)
	if err != nil || len(got) != 1 {
		t.Fatalf("Last: %v, %v", got, err)
	}
	g := got[0]
	if !bytes.Equal(g.Conversation, m.Conversation) || g.ID != m.ID || g.Sender != m.Sender ||
		g.Text != m.Text || g.Via != m.Via || g.Seq != seq ||
		!g.Time.Equal(m.Time.Truncate(time.Millisecond)) {
		t.Fatalf("stored %+v, want %+v", g, m)
	}
	// Empty text and via are stored as such.
	e := msg("c", "")
	e.Via = ""
	mustAppend(t, h, e)
	if got, _ := h.Last([]byte("c"), 1); got[0].Text != "" || got[0].Via != "" || got[0].ID != e.ID {
		t.Fatalf("empty fields: %+v", got[0])
	}
}

func TestDuplicateStoredOnce(t *testing.T) {
	h, _, _ := newHistory(t)
	first := msg("dm-bob", "hello")
	seq := mustAppend(t, h, first)
	mustAppend(t, h, msg("dm-bob", "next"))

	again := first
	again.Via = "server" // the same message by the other path
	again.Text = "tampered copy"
	dseq, dup, err := h.Append(again)
	if err != nil || !dup || dseq != seq {
		t.Fatalf("second append: seq %d, dup %v, err %v; want seq %d, dup", dseq, dup, err, seq)
	}
	got, _ := h.Last([]byte("dm-bob"), 10)
	if texts(got) != "hello,next" || got[0].Via != "direct" {
		t.Fatalf("history %q (via %q), want the first copy only", texts(got), got[0].Via)
	}
	if ok, err := h.Has([]byte("dm-bob"), first.ID); !ok || err != nil {
		t.Fatalf("Has = %v, %v", ok, err)
	}
	if ok, _ := h.Has([]byte("dm-bob"), payload.NewID()); ok {
		t.Fatal("Has of an unseen id")
	}
	if ok, _ := h.Has([]byte("elsewhere"), first.ID); ok {
		t.Fatal("Has in another conversation")
	}

	// The same id in another conversation is another message.
	other := first
	other.Conversation = []byte("group")
	if _, dup, err := h.Append(other); dup || err != nil {
		t.Fatalf("same id, other conversation: dup %v, err %v", dup, err)
	}
}

// TestConcurrentDuplicates: the same message arriving on two paths at once
// is stored exactly once.
func TestConcurrentDuplicates(t *testing.T) {
	defer goleak.VerifyNone(t)
	h, _, _ := newHistory(t)
	const paths = 8
	for range 20 {
		m := msg("dm-bob", "racing")
		var wg sync.WaitGroup
		var mu sync.Mutex
		stored := 0
		for range paths {
			wg.Go(func() {
				_, dup, err := h.Append(m)
				if err != nil {
					t.Error(err)
				}
				if !dup {
					mu.Lock()
					stored++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if stored != 1 {
			t.Fatalf("stored %d times, want 1", stored)
		}
	}
	if got, _ := h.Last([]byte("dm-bob"), MaxList); len(got) != 20 {
		t.Fatalf("%d messages, want 20", len(got))
	}
}

func TestSurvivesRestart(t *testing.T) {
	h, db, path := newHistory(t)
	var ms []Message
	for i := range 5 {
		m := msg("group", fmt.Sprint(i))
		mustAppend(t, h, m)
		ms = append(ms, m)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, path)
	defer db.Close()
	h, err := New(db)
	if err != nil {
		t.Fatal(err)
	}
	got, err := h.Last([]byte("group"), 10)
	if err != nil || texts(got) != "0,1,2,3,4" {
		t.Fatalf("after restart: %q, %v", texts(got), err)
	}
	// De-duplication remembers across restarts; numbering continues.
	if _, dup, _ := h.Append(ms[2]); !dup {
		t.Fatal("duplicate after restart stored again")
	}
	if seq := mustAppend(t, h, msg("group", "5")); seq != 6 {
		t.Fatalf("seq after restart %d, want 6", seq)
	}
}

func TestLastCappedAtMaxList(t *testing.T) {
	h, db, _ := newHistory(t)
	// Fill past the cap in one transaction to keep the test fast; Append's
	// path is covered above.
	conv := []byte("busy")
	err := db.Update(func(tx *bolt.Tx) error {
		c, _ := tx.Bucket(rootBucket).CreateBucketIfNotExists(conv)
		msgs, _ := c.CreateBucketIfNotExists(msgBucket)
		for i := range MaxList + 5 {
			seq, _ := msgs.NextSequence()
			m := msg("busy", fmt.Sprint(i))
			k := binary.BigEndian.AppendUint64(nil, seq)
			if err := msgs.Put(k, encode(m)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := h.Last(conv, MaxList+5)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != MaxList || got[len(got)-1].Text != fmt.Sprint(MaxList+4) || got[0].Text != "5" {
		t.Fatalf("got %d messages (%s … %s), want the last %d", len(got), got[0].Text, got[len(got)-1].Text, MaxList)
	}
}

func TestAppendRejects(t *testing.T) {
	h, _, _ := newHistory(t)
	for _, tc := range []struct {
		name string
		mod  func(*Message)
	}{
		{"no conversation", func(m *Message) { m.Conversation = nil }},
		{"conversation too long", func(m *Message) { m.Conversation = make([]byte, MaxConversationSize+1) }},
		{"zero id", func(m *Message) { m.ID = payload.ID{} }},
		{"text too long", func(m *Message) { m.Text = strings.Repeat("a", MaxTextSize+1) }},
		{"via too long", func(m *Message) { m.Via = strings.Repeat("v", MaxViaSize+1) }},
	} {
		m := msg("c", "x")
		tc.mod(&m)
		if _, _, err := h.Append(m); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", tc.name, err)
		}
	}
	// The limits themselves are accepted.
	m := msg(strings.Repeat("c", MaxConversationSize), strings.Repeat("a", MaxTextSize))
	m.Via = strings.Repeat("v", MaxViaSize)
	mustAppend(t, h, m)
}

func TestDecodeRejectsCorrupt(t *testing.T) {
	v := encode(msg("c", "hello"))
	k := []byte{0, 0, 0, 0, 0, 0, 0, 1}
	if m, err := decode([]byte("c"), k, v); err != nil || m.Text != "hello" || m.Seq != 1 {
		t.Fatalf("decode: %+v, %v", m, err)
	}
	for _, tc := range []struct {
		name string
		k, v []byte
	}{
		{"short key", k[:7], v},
		{"short value", k, v[:recordHeaderSize-1]},
		{"unknown format", k, append([]byte{2}, v[1:]...)},
		{"via past end", k, append(bytes.Clone(v[:recordHeaderSize-1]), 20, 'x')},
		{"via over limit", k, append(bytes.Clone(v[:recordHeaderSize-1]), append([]byte{MaxViaSize + 1}, make([]byte, 40)...)...)},
	} {
		if _, err := decode([]byte("c"), tc.k, tc.v); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", tc.name, err)
		}
	}
}

// FuzzDecode: a damaged database never makes the decoder panic, and what it
// accepts re-encodes to the same bytes.
func FuzzDecode(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1}, encode(msg("c", "hello")))
	e := msg("c", "")
	e.Via = ""
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 2}, encode(e))
	f.Fuzz(func(t *testing.T, k, v []byte) {
		m, err := decode([]byte("c"), k, v)
		if err != nil {
			return
		}
		if !bytes.Equal(encode(m), v) {
			t.Fatal("decode then encode changed the bytes")
		}
	})
}

// BenchmarkAppend is one durable append (one bbolt commit with fsync) of a
// short text message.
func BenchmarkAppend(b *testing.B) {
	h, _, _ := newHistory(b)
	m := msg("dm-bob", "a short line of chat, about sixty bytes long, like most are")
	for b.Loop() {
		m.ID = payload.NewID()
		if _, _, err := h.Append(m); err != nil {
			b.Fatal(err)
		}
	}
}

// TestAppendTxRollsBack: a message appended in a transaction that rolls
// back is neither stored nor remembered as seen.
func TestAppendTxRollsBack(t *testing.T) {
	h, db, _ := newHistory(t)
	m := msg("c", "lost with its transaction")
	boom := errors.New("boom")
	err := db.Update(func(tx *bolt.Tx) error {
		if _, dup, err := h.AppendTx(tx, m); err != nil || dup {
			t.Fatalf("AppendTx: dup %v, err %v", dup, err)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if seen, _ := h.Has(m.Conversation, m.ID); seen {
		t.Fatal("rolled-back message is remembered")
	}
	mustAppend(t, h, m)
}
