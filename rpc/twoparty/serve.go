package twoparty

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exc"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	"github.com/quicproquo/qpq/rpc/errcode"
)

// bootstrapExport is the export id of the bootstrap capability, the only
// capability a Conn exports.
const bootstrapExport = 0

// Refusals of calls the Conn cannot serve; their text starts with the
// stable codes of package errcode, like every error on the wire.
var (
	errNoBootstrap   = errcode.New(errcode.FailedPrecondition, "this connection offers no bootstrap capability")
	errUnknownTarget = errcode.New(errcode.InvalidArgument, "call to a capability this connection does not export")
	errNoCapsInCalls = errcode.New(errcode.InvalidArgument, "capabilities in parameters or results are not supported")
	errResultsToPeer = errcode.New(errcode.InvalidArgument, "results can only be returned to the caller")
)

// answer is the state of a question the peer asked: a call being served
// (until its Return is written) or a bootstrap answer (until the peer's
// Finish).
type answer struct {
	bootstrap bool
	err       error              // bootstrap only: why it failed
	cancel    context.CancelFunc // call only: cancels the call's context
}

// addAnswer records the peer's new question id.
func (c *Conn) addAnswer(id uint32, a *answer) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.answers[id]; ok {
		return protocolError("question id in use")
	}
	if len(c.answers) >= c.maxAnswers {
		return protocolError("too many questions open")
	}
	c.answers[id] = a
	if !a.bootstrap {
		c.serving.Add(1)
	}
	return nil
}

func (c *Conn) handleBootstrap(m rpccp.Message) error {
	b, err := m.Bootstrap()
	if err != nil {
		return protocolError("read bootstrap: " + err.Error())
	}
	id := b.QuestionId()
	a := &answer{bootstrap: true}
	if !c.bootstrap.IsValid() {
		a.err = errNoBootstrap
	}
	if err := c.addAnswer(id, a); err != nil {
		return err
	}
	reply := newMessage()
	ret, err := reply.NewReturn()
	if err != nil {
		return err
	}
	ret.SetAnswerId(id)
	ret.SetReleaseParamCaps(false)
	if a.err != nil {
		e, err := ret.NewException()
		if err != nil {
			return err
		}
		setException(e, a.err)
	} else {
		payload, err := ret.NewResults()
		if err != nil {
			return err
		}
		if err := payload.SetContent(capnp.NewInterface(reply.Segment(), 0).ToPtr()); err != nil {
			return err
		}
		caps, err := payload.NewCapTable(1)
		if err != nil {
			return err
		}
		caps.At(0).SetSenderHosted(bootstrapExport)
	}
	c.post(reply)
	return nil
}

func (c *Conn) handleFinish(m rpccp.Message) error {
	f, err := m.Finish()
	if err != nil {
		return protocolError("read finish: " + err.Error())
	}
	c.mu.Lock()
	a := c.answers[f.QuestionId()]
	if a != nil && a.bootstrap {
		delete(c.answers, f.QuestionId())
	}
	c.mu.Unlock()
	// A call's answer is dropped when its Return is written
	// (noFinishNeeded), so a Finish that finds it is a cancellation; one
	// that does not came after the Return and means nothing.
	if a != nil && a.cancel != nil {
		a.cancel()
	}
	return nil
}

// handleCall checks a Call's target and parameters and hands it to the
// bootstrap capability. msg stays alive until the call releases its
// arguments.
func (c *Conn) handleCall(msg *capnp.Message, m rpccp.Message) error {
	call, err := m.Call()
	if err != nil {
		msg.Release()
		return protocolError("read call: " + err.Error())
	}
	id := call.QuestionId()
	refuse := c.checkCall(call)
	var args capnp.Struct
	if refuse == nil {
		params, err := call.Params()
		if err == nil {
			var content capnp.Ptr
			content, err = params.Content()
			args = content.Struct()
		}
		if err != nil {
			refuse = exc.WrapError("invalid-argument: read parameters", err)
		}
	}
	ctx, cancel := context.WithCancel(c.ctx)
	a := &answer{cancel: cancel}
	if err := c.addAnswer(id, a); err != nil {
		cancel()
		msg.Release()
		return err
	}
	method := capnp.Method{InterfaceID: call.InterfaceId(), MethodID: call.MethodId()}
	r := &returner{c: c, id: id, a: a, args: msg, method: method}
	if refuse != nil {
		r.releaseArgs()
		r.PrepareReturn(refuse)
		r.reader = true
		r.Return()
		return nil
	}
	c.bootstrap.RecvCall(ctx, capnp.Recv{
		Method:      method,
		Args:        args,
		ReleaseArgs: r.releaseArgs,
		Returner:    r,
	})
	return nil
}

// checkCall returns why the Conn cannot serve call, or nil.
func (c *Conn) checkCall(call rpccp.Call) error {
	if call.SendResultsTo().Which() != rpccp.Call_sendResultsTo_Which_caller {
		return errResultsToPeer
	}
	if params, err := call.Params(); err == nil && params.HasCapTable() {
		if caps, err := params.CapTable(); err != nil || caps.Len() > 0 {
			return errNoCapsInCalls
		}
	}
	target, err := call.Target()
	if err != nil {
		return errUnknownTarget
	}
	switch target.Which() {
	case rpccp.MessageTarget_Which_importedCap:
		if target.ImportedCap() != bootstrapExport || !c.bootstrap.IsValid() {
			return errUnknownTarget
		}
		return nil
	case rpccp.MessageTarget_Which_promisedAnswer:
		pa, err := target.PromisedAnswer()
		if err != nil {
			return errUnknownTarget
		}
		ops, err := pa.Transform()
		if err != nil {
			return errUnknownTarget
		}
		for i := 0; i < ops.Len(); i++ {
			if ops.At(i).Which() != rpccp.PromisedAnswer_Op_Which_noop {
				return errUnknownTarget
			}
		}
		c.mu.Lock()
		a := c.answers[pa.QuestionId()]
		c.mu.Unlock()
		if a == nil || !a.bootstrap {
			return errUnknownTarget
		}
		return a.err
	default:
		return errUnknownTarget
	}
}

// returner builds and writes the Return of one call served; see
// capnp.Returner for the order of its methods.
type returner struct {
	c  *Conn
	id uint32
	a  *answer

	args         *capnp.Message // the Call; released by releaseArgs
	argsReleased atomic.Bool

	method capnp.Method // what was called, for the refusal of an unknown one

	reply rpccp.Message // the Return with its results, once allocated
	ret   rpccp.Return
	err   error

	reader bool // Return runs on the reader goroutine (a refused call)
}

var _ capnp.Returner = (*returner)(nil)

func (r *returner) releaseArgs() {
	if r.argsReleased.CompareAndSwap(false, true) {
		r.args.Release()
	}
}

func (r *returner) AllocResults(sz capnp.ObjectSize) (capnp.Struct, error) {
	if r.reply.IsValid() {
		return capnp.Struct{}, errors.New("twoparty: results allocated twice")
	}
	m := newMessage()
	ret, err := m.NewReturn()
	if err != nil {
		return capnp.Struct{}, err
	}
	payload, err := ret.NewResults()
	if err != nil {
		return capnp.Struct{}, err
	}
	st, err := capnp.NewStruct(m.Segment(), sz)
	if err != nil {
		return capnp.Struct{}, err
	}
	if err := payload.SetContent(st.ToPtr()); err != nil {
		return capnp.Struct{}, err
	}
	r.reply, r.ret = m, ret
	return st, nil
}

func (r *returner) PrepareReturn(err error) { r.err = unimplemented(r.method, err) }

// unimplemented gives capnp-go's bare "unimplemented" refusal (a method or
// interface the served schema lacks, as a newer client may call) a stable
// code, keeping the exception type that tells standard clients the method
// is missing.
func unimplemented(m capnp.Method, err error) error {
	if err == nil || exc.TypeOf(err) != exc.Unimplemented {
		return err
	}
	if _, ok := errcode.Find(err); ok {
		return err
	}
	return exc.New(exc.Unimplemented, "", fmt.Sprintf("%s: method @%d of interface %#x is not implemented here",
		errcode.FailedPrecondition, m.MethodID, m.InterfaceID))
}

// Return writes the Return. The answer is dropped first: the caller may
// reuse the question id the moment the Return reaches it.
func (r *returner) Return() {
	if r.err == nil && r.reply.IsValid() && r.reply.Message().CapTable().Len() > 0 {
		r.err = errNoCapsInCalls
	}
	reply, ret := r.reply, r.ret
	if r.err != nil || !reply.IsValid() {
		reply = newMessage()
		var err error
		if ret, err = reply.NewReturn(); err != nil {
			r.c.fail(err)
			return
		}
		if r.err != nil {
			e, err := ret.NewException()
			if err != nil {
				r.c.fail(err)
				return
			}
			setException(e, r.err)
		} else if _, err := ret.NewResults(); err != nil {
			r.c.fail(err)
			return
		}
	}
	ret.SetAnswerId(r.id)
	ret.SetReleaseParamCaps(false)
	ret.SetNoFinishNeeded(true)
	r.c.mu.Lock()
	if r.c.answers[r.id] == r.a {
		delete(r.c.answers, r.id)
		r.c.serving.Add(-1)
	}
	r.c.mu.Unlock()
	r.a.cancel()
	if r.reader {
		r.c.post(reply)
	} else {
		r.c.send(reply)
	}
}

func (r *returner) ReleaseResults() {}
