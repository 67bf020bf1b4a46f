package twoparty

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/server"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	"github.com/quicproquo/qpq/schema"
)

// fuzzStream feeds a Conn the fuzzer's bytes once the test has asked its
// own questions, and discards what the Conn writes.
type fuzzStream struct {
	gate   chan struct{} // closed when reading may start
	r      io.Reader
	once   sync.Once
	closed chan struct{}
}

func (s *fuzzStream) Read(p []byte) (int, error) {
	select {
	case <-s.gate:
	case <-s.closed:
		return 0, io.ErrClosedPipe
	}
	return s.r.Read(p)
}

func (s *fuzzStream) Write(p []byte) (int, error) { return len(p), nil }

func (s *fuzzStream) Close() error {
	s.once.Do(func() { close(s.closed) })
	return nil
}

// encode frames the messages build makes, one after another.
func encode(t testing.TB, builds ...func(rpccp.Message) error) []byte {
	var out []byte
	for _, build := range builds {
		m := newMessage()
		if err := build(m); err != nil {
			t.Fatal(err)
		}
		b, err := m.Message().Marshal()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	return out
}

func callMsg(id, target uint32, method uint16) func(rpccp.Message) error {
	return func(m rpccp.Message) error {
		call, err := m.NewCall()
		if err != nil {
			return err
		}
		call.SetQuestionId(id)
		call.SetInterfaceId(schema.NodeService_TypeID)
		call.SetMethodId(method)
		t, err := call.NewTarget()
		if err != nil {
			return err
		}
		pa, err := t.NewPromisedAnswer()
		pa.SetQuestionId(target)
		return err
	}
}

func returnMsg(id uint32, noFinish bool) func(rpccp.Message) error {
	return func(m rpccp.Message) error {
		r, err := m.NewReturn()
		if err != nil {
			return err
		}
		r.SetAnswerId(id)
		r.SetNoFinishNeeded(noFinish)
		p, err := r.NewResults()
		if err != nil {
			return err
		}
		st, err := capnp.NewStruct(m.Segment(), capnp.ObjectSize{PointerCount: 1})
		if err != nil {
			return err
		}
		return p.SetContent(st.ToPtr())
	}
}

// implemented serves only the methods svc implements, so that calls to
// the others get unimplemented instead of reaching the nil embedded
// interface.
func implemented(svc *service) capnp.Client {
	var kept []server.Method
	for _, m := range schema.NodeService_Methods(nil, svc) {
		switch m.MethodID {
		case 2, 4, 5: // enqueue, fetchWait, health
			kept = append(kept, m)
		}
	}
	return capnp.NewClient(server.New(kept, svc, nil))
}

// FuzzConn feeds arbitrary bytes to a Conn that serves NodeService and
// has its own bootstrap and call outstanding: it must never panic, and it
// must end (and release everything) when the bytes run out.
func FuzzConn(f *testing.F) {
	f.Add(encode(f, bootstrapMsg(0), callMsg(1, 0, 5), callMsg(2, 0, 2)))
	f.Add(encode(f, returnMsg(0, false), returnMsg(1, true)))
	f.Add(encode(f, returnMsg(1, false), bootstrapMsg(3), func(m rpccp.Message) error {
		fin, err := m.NewFinish()
		fin.SetQuestionId(3)
		return err
	}))
	f.Add(encode(f, func(m rpccp.Message) error {
		u, err := m.NewUnimplemented()
		if err != nil {
			return err
		}
		return callMsg(1, 0, 5)(u)
	}, func(m rpccp.Message) error {
		_, err := m.NewResolve()
		return err
	}, func(m rpccp.Message) error {
		e, err := m.NewAbort()
		if err == nil {
			err = e.SetReason("bye")
		}
		return err
	}))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &fuzzStream{gate: make(chan struct{}), r: bytes.NewReader(data), closed: make(chan struct{})}
		c := NewConn(s, Options{
			Bootstrap:      implemented(newService()),
			MaxMessageSize: 1 << 16,
			MaxAnswers:     16,
		})
		ns := schema.NodeService(c.Bootstrap())
		f, release := ns.Health(context.Background(), nil)
		close(s.gate)
		f.Struct() // resolved by the input or by the Conn's end
		release()
		ns.Release()
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the Conn did not end when its input did")
		}
	})
}
