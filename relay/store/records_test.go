package store

import (
	"bytes"
	"testing"
	"time"
)

// The stored records are decoded from disk, which a damaged or foreign
// file makes untrusted: decoders must refuse bad bytes with ErrCorrupt,
// never panic, and re-encode what they accept to the same bytes.
func FuzzRecords(f *testing.F) {
	at := time.Unix(1_700_000_000, 123)
	f.Add(queueState{next: 5, depth: 2}.encode())
	f.Add(Channel{Lo: key(1), Hi: key(2), Created: at}.encode())
	f.Add(User{Identity: key(3), Created: at, Record: bytes.Repeat([]byte{7}, 192)}.encode())
	f.Add(Token{Identity: key(4), Expiry: at}.encode())
	f.Add(Endpoint{Published: at, NodeAddr: []byte(`{"ID":"x","Addrs":[]}`)}.encode())
	f.Add([]byte{})
	f.Add([]byte{2, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if q, err := decodeQueueState(b); err == nil && !bytes.Equal(q.encode(), b) {
			t.Fatalf("queue state does not round-trip: %x", b)
		}
		if c, err := decodeChannel(b); err == nil && !bytes.Equal(c.encode(), b) {
			t.Fatalf("channel does not round-trip: %x", b)
		}
		if u, err := decodeUser(b); err == nil && !bytes.Equal(u.encode(), b) {
			t.Fatalf("user does not round-trip: %x", b)
		}
		if tk, err := decodeToken(b); err == nil && !bytes.Equal(tk.encode(), b) {
			t.Fatalf("token does not round-trip: %x", b)
		}
		if e, err := decodeEndpoint(b); err == nil && !bytes.Equal(e.encode(), b) {
			t.Fatalf("endpoint does not round-trip: %x", b)
		}
	})
}

func TestRecordsRejectOtherVersions(t *testing.T) {
	for name, enc := range map[string][]byte{
		"queue":    queueState{}.encode(),
		"channel":  Channel{}.encode(),
		"user":     User{}.encode(),
		"token":    Token{}.encode(),
		"endpoint": Endpoint{}.encode(),
	} {
		enc[0] = 2
		var err error
		switch name {
		case "queue":
			_, err = decodeQueueState(enc)
		case "channel":
			_, err = decodeChannel(enc)
		case "user":
			_, err = decodeUser(enc)
		case "token":
			_, err = decodeToken(enc)
		case "endpoint":
			_, err = decodeEndpoint(enc)
		}
		if err == nil {
			t.Errorf("%s: version 2 accepted", name)
		}
	}
	if _, err := decodeQueueState(queueState{next: 1, depth: 2}.encode()); err == nil {
		t.Error("queue state with depth above its last seq accepted")
	}
}
