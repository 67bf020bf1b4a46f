package twoparty

import (
	"bytes"
	"testing"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/schema"
)

// TestAppendFrame: appendFrame writes the bytes capnp-go's Marshal does,
// for one segment and for two (odd and even counts, which differ in the
// header's padding), after whatever dst already held.
func TestAppendFrame(t *testing.T) {
	seen := map[int64]bool{}
	for _, segs := range []int{1, 2, 3, 4} {
		arena := capnp.SingleSegment(nil)
		if segs > 1 {
			arena = capnp.MultiSegment(nil)
		}
		msg, seg, err := capnp.NewMessage(arena)
		if err != nil {
			t.Fatal(err)
		}
		p, err := schema.NewRootNodeService_enqueue_Params(seg)
		if err != nil {
			t.Fatal(err)
		}
		// Payloads big enough to spill into new segments of a multi-segment arena.
		if err := p.SetPayload(bytes.Repeat([]byte{byte(segs)}, 1000*segs)); err != nil {
			t.Fatal(err)
		}
		if err := p.SetRecipientKey(bytes.Repeat([]byte{7}, 32)); err != nil {
			t.Fatal(err)
		}
		want, err := msg.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		prefix := []byte("prefix")
		got, err := appendFrame(bytes.Clone(prefix), msg)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[:len(prefix)], prefix) || !bytes.Equal(got[len(prefix):], want) {
			t.Fatalf("%d segment(s) requested (%d made): frame differs from Marshal", segs, msg.NumSegments())
		}
		back, err := capnp.Unmarshal(got[len(prefix):])
		if err != nil {
			t.Fatalf("%d segments: %v", msg.NumSegments(), err)
		}
		if back.NumSegments() != msg.NumSegments() {
			t.Fatalf("segments %d, want %d", back.NumSegments(), msg.NumSegments())
		}
		seen[msg.NumSegments()] = true
	}
	if !seen[1] || !seen[2] {
		t.Fatalf("segment counts covered %v; want an odd (1) and an even (2) count", seen)
	}
}
