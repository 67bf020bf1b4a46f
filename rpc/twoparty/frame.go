package twoparty

import (
	"encoding/binary"
	"errors"
	"fmt"

	"capnproto.org/go/capnp/v3"
)

// appendFrame appends msg to dst in Cap'n Proto's standard stream framing
// (the bytes capnp.Message.Marshal returns): the segment count minus one
// and each segment's size in words, as little-endian uint32s padded to a
// word, then the segments. Appending lets the write combiner put a frame
// straight into its buffer instead of into a new slice per message.
func appendFrame(dst []byte, msg *capnp.Message) ([]byte, error) {
	n := msg.NumSegments()
	if n == 0 {
		return dst, errors.New("twoparty: message has no segments")
	}
	if n > maxSegments {
		return dst, fmt.Errorf("twoparty: message has %d segments", n)
	}
	// Check every segment before appending anything: a frame is appended
	// whole or not at all, since dst may hold other frames.
	segs := make([][]byte, 0, 4)
	for i := range n {
		seg, err := msg.Segment(capnp.SegmentID(i))
		if err != nil {
			return dst, err
		}
		if len(seg.Data())%8 != 0 {
			return dst, fmt.Errorf("twoparty: segment %d is not word-aligned", i)
		}
		segs = append(segs, seg.Data())
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(n-1))
	for _, d := range segs {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(d)/8))
	}
	if n%2 == 0 { // the count and sizes are n+1 uint32s; pad to a word
		dst = binary.LittleEndian.AppendUint32(dst, 0)
	}
	for _, d := range segs {
		dst = append(dst, d...)
	}
	return dst, nil
}

// maxSegments bounds the segments of a message written: far more than an
// RPC message of ours has, and within what decoders accept (capnp-go's
// default is 512).
const maxSegments = 512
