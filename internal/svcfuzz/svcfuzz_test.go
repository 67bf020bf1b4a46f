package svcfuzz

import (
	"bytes"
	"context"
	"io"
	"testing"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/rpc/errcode"
	"github.com/quicproquo/qpq/rpc/twoparty"
)

// capture is a capability that keeps the raw words of each call's
// parameter struct and the bytes after it, and answers with err.
type capture struct {
	words, heap []byte
	err         error
}

func (c *capture) Send(context.Context, capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	panic("not called")
}

func (c *capture) Recv(_ context.Context, r capnp.Recv) capnp.PipelineCaller {
	// The struct's first data word is the test's mark, so its place in
	// the received segment can be found.
	data := r.Args.Segment().Data()
	at := bytes.Index(data, []byte("RAWWORDS"))
	end := min(at+32, len(data))
	c.words = bytes.Clone(data[at:end])
	c.heap = bytes.Clone(data[end:])
	r.ReleaseArgs()
	r.Reject(c.err)
	return nil
}

func (c *capture) Brand() capnp.Brand { return capnp.Brand{} }
func (c *capture) Shutdown()          {}
func (c *capture) String() string     { return "capture" }

func serveCapture(c *capture) Service {
	return Service{InterfaceID: 1, Methods: 1, Serve: func(st io.ReadWriteCloser) {
		conn := twoparty.NewConn(st, twoparty.Options{Bootstrap: capnp.NewClient(c)})
		<-conn.Done()
	}}
}

// TestRawWordsArrive checks that the fuzzer's words reach the service as
// written, pointers that point nowhere included, and that what follows
// them is the input's heap.
func TestRawWordsArrive(t *testing.T) {
	c := &capture{err: errcode.New(errcode.InvalidArgument, "no")}
	// A data word, a pointer of all ones (an "other" pointer with an
	// index no capability table has), a list pointer.
	words := []byte("RAWWORDS" + "\xff\xff\xff\xff\xff\xff\xff\xff" + "\x01\x00\x00\x00\x05\x00\x00\x00")
	heap := []byte("the heap, unaligned")
	in := append([]byte{0, 1 | 2<<4}, words...)
	in = append(in, heap...)
	a, err := serveCapture(c).Call(in)
	if err != nil || a.Code != errcode.InvalidArgument {
		t.Fatalf("call: %v, %v", a, err)
	}
	// The data section has one word more, zero, where Call marked it.
	want := append(append(bytes.Clone(words[:8]), make([]byte, 8)...), words[8:]...)
	if !bytes.Equal(c.words, want) {
		t.Fatalf("struct words arrived as %x, want %x", c.words, want)
	}
	if !bytes.HasPrefix(c.heap, heap) || len(c.heap) >= len(heap)+16 || bytes.ContainsFunc(c.heap[len(heap):], func(r rune) bool { return r != 0 }) {
		t.Fatalf("heap arrived as %q, sent %q", c.heap, heap)
	}
}

// TestCallChecksTheAnswer checks what Call takes for a failure.
func TestCallChecksTheAnswer(t *testing.T) {
	for _, tc := range []struct {
		err  error
		fail bool
	}{
		{errcode.New(errcode.NotFound, "no such thing"), false},
		{errcode.New(errcode.Internal, "bug"), true},
		{io.ErrUnexpectedEOF, true}, // no stable code
	} {
		c := &capture{err: tc.err}
		_, err := serveCapture(c).Call([]byte{0, 1, 'R', 'A', 'W', 'W', 'O', 'R', 'D', 'S'})
		if (err != nil) != tc.fail {
			t.Errorf("answer %v: Call says %v", tc.err, err)
		}
	}
}
