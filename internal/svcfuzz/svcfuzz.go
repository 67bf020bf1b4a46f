// Package svcfuzz drives a Cap'n Proto service with calls whose parameters
// are a fuzzer's bytes, for the fuzz targets of every service that answers
// calls from the network (the home server's NodeService, a node's
// NodeService over the P2P link, FederationService).
//
// The parameters are not built through the generated setters, which can
// only write well-formed structs: the fuzzer writes the raw words of the
// parameter struct and of what follows it in the message, so its pointers
// may point anywhere (out of bounds, into each other, at the wrong kind of
// object), as a hostile peer's can. Only the RPC frame around them is
// well-formed, so that the call reaches the method.
//
// An input is
//
//	byte 0     the method: its value modulo (methods+1); the last is unknown
//	byte 1     the struct's size: low nibble data words, high nibble pointers
//	then       the struct's words (data, then pointers), zero-padded
//	then       the bytes that follow the struct in the message
//
// Record turns the calls of a typed client into inputs, so that a
// corpus starts from calls that reach each method's deeper paths.
package svcfuzz

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/rpc/errcode"
	"github.com/quicproquo/qpq/rpc/twoparty"
)

// Service is the interface under test.
type Service struct {
	InterfaceID uint64
	Methods     int // methods 0..Methods-1 exist
	// Serve serves the bootstrap capability on stream until it closes,
	// as the real listener does (rpc.ServeStream, say).
	Serve func(stream io.ReadWriteCloser)
	// Timeout bounds one call; a call still running then is a hang.
	// 0 means 5 s.
	Timeout time.Duration
	// Log, if set, is the service's error log: Check fails when a call
	// left something there.
	Log *ErrorLog
	// Health, if set, is an input that must get results after every
	// call Check makes: the service goes on answering.
	Health []byte
}

// Check is the body of a fuzz target: the call in describes is answered
// as Call requires, logs nothing as the service's own failure, and
// leaves the service answering.
func (s Service) Check(t *testing.T, in []byte) {
	t.Helper()
	if _, err := s.Call(in); err != nil {
		t.Fatal(err)
	}
	if s.Log != nil {
		if m := s.Log.Take(); len(m) > 0 {
			t.Fatalf("logged as the service's own failure: %q", m)
		}
	}
	if s.Health != nil {
		if a, err := s.Call(s.Health); err != nil || a.Code != "" {
			t.Fatalf("the service stopped answering: %v, %v", a.Err, err)
		}
	}
}

// CheckSeeds makes the calls of a corpus written by Record, which are
// calls a real caller makes: each must get results, unless refused says
// its error is expected. A seed that fails here reaches no deeper path.
func (s Service) CheckSeeds(t testing.TB, seeds [][]byte, refused func(Answer) bool) {
	t.Helper()
	for _, in := range seeds {
		a, err := s.Call(in)
		if err != nil || a.Code != "" && (refused == nil || !refused(a)) {
			t.Fatalf("seed of method %d: %v, %v", a.Method, a.Err, err)
		}
	}
}

// input is a parsed fuzz input.
type input struct {
	method uint16
	data   int // words
	ptrs   int
	words  []byte // (data+ptrs)*8 bytes
	heap   []byte
}

func (s Service) parse(b []byte) input {
	var in input
	if len(b) > 0 {
		in.method = uint16(int(b[0]) % (s.Methods + 1))
	}
	if len(b) > 1 {
		in.data, in.ptrs = int(b[1]&0x0f), int(b[1]>>4)
	}
	rest := b[min(len(b), 2):]
	n := (in.data + in.ptrs) * 8
	in.words = make([]byte, n)
	k := copy(in.words, rest)
	in.heap = rest[k:]
	return in
}

// seed returns the input that calls method with the parameters build
// writes into a struct of size.
func seed(method uint16, size capnp.ObjectSize, build func(capnp.Struct) error) ([]byte, error) {
	if size.DataSize%8 != 0 || size.DataSize/8 > 15 || size.PointerCount > 15 {
		return nil, fmt.Errorf("svcfuzz: struct size %v does not fit an input", size)
	}
	out := []byte{byte(method), byte(size.DataSize/8) | byte(size.PointerCount)<<4}
	if size.DataSize == 0 && size.PointerCount == 0 {
		return out, nil // nothing to write (and capnp points at it oddly)
	}
	msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		return nil, err
	}
	st, err := capnp.NewRootStruct(seg, size)
	if err != nil {
		return nil, err
	}
	if err := build(st); err != nil {
		return nil, err
	}
	b, err := msg.Marshal()
	if err != nil {
		return nil, err
	}
	// Stream framing of one segment: 4 bytes of count, 4 of size, then
	// the segment, whose word 0 is the root pointer and word 1 the root
	// struct (a fresh message allocates it first).
	body := b[8:]
	if binary.LittleEndian.Uint64(body[:8])>>2&(1<<30-1) != 0 {
		return nil, errors.New("svcfuzz: root struct is not at word 1")
	}
	return append(out, body[8:]...), nil
}

// Answer is how a call ended: Code is empty for results.
type Answer struct {
	Method uint16
	Code   errcode.Code
	Err    error
}

// Call makes the call an input describes on a fresh connection and
// checks its answer: results, or an error whose text has one of the
// stable codes other than internal (a bad request is the caller's
// mistake, never the server's). The error says what is wrong.
func (s Service) Call(b []byte) (Answer, error) {
	in := s.parse(b)
	a := Answer{Method: in.method}
	timeout := s.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	serverEnd, clientEnd := net.Pipe()
	served := make(chan struct{})
	go func() {
		defer close(served)
		s.Serve(serverEnd)
	}()
	conn := twoparty.NewConn(clientEnd, twoparty.Options{})
	defer func() {
		conn.Close()
		<-served
	}()

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var placeErr error
	boot := conn.Bootstrap()
	defer boot.Release()
	ans, release := boot.SendCall(ctx, capnp.Send{
		Method: capnp.Method{InterfaceID: s.InterfaceID, MethodID: in.method},
		// One data word more than asked for, to mark where the struct
		// lies in the segment; it is zeroed before the call leaves.
		ArgsSize: capnp.ObjectSize{DataSize: capnp.Size(in.data+1) * 8, PointerCount: uint16(in.ptrs)},
		PlaceArgs: func(args capnp.Struct) error {
			placeErr = place(args, in)
			return placeErr
		},
	})
	defer release()
	_, a.Err = ans.Struct()
	switch {
	case placeErr != nil:
		return a, fmt.Errorf("svcfuzz: building the call: %w", placeErr)
	case a.Err == nil:
		return a, nil
	case ctx.Err() != nil:
		return a, fmt.Errorf("method %d: no answer within %v", in.method, timeout)
	}
	code, ok := errcode.Find(a.Err)
	a.Code = code
	switch {
	case !ok:
		return a, fmt.Errorf("method %d: error without a stable code: %v", in.method, a.Err)
	case code == errcode.Internal:
		return a, fmt.Errorf("method %d: a bad request answered as the server's failure: %v", in.method, a.Err)
	}
	return a, nil
}

var (
	structMark = []byte("svcfuzz:struct!!")[:8]
	heapMark   = []byte("svcfuzz:heap-mark")[:8]
)

// place writes in's words over args and its heap right after args, in
// the segment args lives in.
func place(args capnp.Struct, in input) error {
	seg := args.Segment()
	args.SetUint64(capnp.DataOffset(in.data*8), binary.LittleEndian.Uint64(structMark))
	heap := append(bytes.Clone(heapMark), in.heap...)
	if _, err := capnp.NewData(seg, heap); err != nil {
		return err
	}
	data := seg.Data() // after the last allocation: the arena may have moved
	at := bytes.Index(data, structMark)
	if at < 0 || at%8 != 0 || at < in.data*8 {
		return errors.New("svcfuzz: parameter struct not found")
	}
	start := at - in.data*8
	end := at + 8 + in.ptrs*8
	if end+len(heap) > len(data) || !bytes.Equal(data[end:end+8], heapMark) {
		return errors.New("svcfuzz: heap does not follow the struct")
	}
	copy(data[start:at], in.words[:in.data*8])
	clear(data[at : at+8])
	copy(data[at+8:end], in.words[in.data*8:])
	// The heap moves 8 bytes down over its mark; its old last 8 bytes
	// become zero padding.
	copy(data[end:], in.heap)
	clear(data[end+len(in.heap) : end+len(heap)])
	return nil
}

// Record adds to f's corpus the inputs of the calls make makes on the
// client it is given, which answers every call with an error, and
// returns them: a corpus written with the generated client (or any typed
// wrapper of it), so that each seed holds exactly the parameters a real
// caller sends.
func Record(f *testing.F, make func(capnp.Client)) [][]byte {
	f.Helper()
	r := &recorder{}
	c := capnp.NewClient(r)
	make(c)
	c.Release()
	if r.err != nil {
		f.Fatal(r.err)
	}
	for _, s := range r.seeds {
		f.Add(s)
	}
	return r.seeds
}

var errRecorded = errors.New("svcfuzz: recorded, not sent")

type recorder struct {
	seeds [][]byte
	err   error
}

func (r *recorder) Send(_ context.Context, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	in, err := seed(s.Method.MethodID, s.ArgsSize, func(st capnp.Struct) error {
		if s.PlaceArgs == nil {
			return nil
		}
		return s.PlaceArgs(st)
	})
	if err != nil {
		r.err = errors.Join(r.err, fmt.Errorf("method %d: %w", s.Method.MethodID, err))
	} else {
		r.seeds = append(r.seeds, in)
	}
	return capnp.ErrorAnswer(s.Method, errRecorded), func() {}
}

func (r *recorder) Recv(_ context.Context, rc capnp.Recv) capnp.PipelineCaller {
	rc.Reject(errRecorded)
	return nil
}

func (r *recorder) Brand() capnp.Brand { return capnp.Brand{} }
func (r *recorder) Shutdown()          {}
func (r *recorder) String() string     { return "svcfuzz.recorder" }

// ErrorLog is a slog.Handler that keeps what is logged at error level: a
// service logs there what it takes for its own failure, which a bad
// request must never be.
type ErrorLog struct {
	mu   sync.Mutex
	msgs []string
}

func (l *ErrorLog) Enabled(_ context.Context, lv slog.Level) bool { return lv >= slog.LevelError }

func (l *ErrorLog) Handle(_ context.Context, r slog.Record) error {
	s := r.Message
	r.Attrs(func(a slog.Attr) bool { s += " " + a.String(); return true })
	l.mu.Lock()
	l.msgs = append(l.msgs, s)
	l.mu.Unlock()
	return nil
}

func (l *ErrorLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *ErrorLog) WithGroup(string) slog.Handler      { return l }

// Take returns what was logged since the last Take.
func (l *ErrorLog) Take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.msgs
	l.msgs = nil
	return m
}
