package twoparty

import (
	"context"
	"errors"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exc"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

var (
	errNoPipelining = errors.New("twoparty: pipelining on call results is not supported (results hold no capabilities)")
	errNoForwarding = errors.New("twoparty: forwarding calls to a remote capability is not supported")
	errReleased     = errors.New("twoparty: call released before its return")
)

// question is the state of a question this side asked: a call (until
// its Return arrived and its Finish, if any, was written) or a bootstrap
// (until the capability is released). Its fields are guarded by Conn.mu.
type question struct {
	p         *capnp.Promise // nil for a bootstrap
	bootstrap bool
	resolved  bool           // p is resolved or being resolved, by exactly one party
	returned  bool           // the Return arrived
	finished  bool           // a Finish was written, or none is needed
	stop      func() bool    // stops watching the call's context; nil when not watching
	results   *capnp.Message // the Return holding the results, until released
}

// stopWatch stops watching the call's context. The question must be
// resolved (so stop is no longer written).
func (q *question) stopWatch() {
	if q.stop != nil {
		q.stop()
	}
}

// addQuestionLocked gives q a question id. c.mu must be held.
func (c *Conn) addQuestionLocked(q *question) (uint32, error) {
	if c.err != nil {
		return 0, &exc.Exception{Type: exc.Disconnected, Prefix: "rpc", Cause: c.err}
	}
	var id uint32
	if n := len(c.freeIDs); n > 0 {
		id = c.freeIDs[n-1]
		c.freeIDs = c.freeIDs[:n-1]
	} else {
		id = c.nextID
		c.nextID++
	}
	c.questions[id] = q
	if !q.bootstrap {
		c.asking.Add(1)
	}
	return id, nil
}

// retireLocked frees q's id once its Return arrived and its Finish is
// written: only then may the peer see the id again. c.mu must be held.
func (c *Conn) retireLocked(id uint32, q *question) {
	if q.returned && q.finished && c.questions[id] == q {
		delete(c.questions, id)
		c.freeIDs = append(c.freeIDs, id)
	}
}

// sendFinish writes a Finish for question id (queues it, from the reader:
// see post), then lets the id be retired.
func (c *Conn) sendFinish(id uint32, q *question, fromReader bool) {
	m := newMessage()
	if f, err := m.NewFinish(); err == nil {
		f.SetQuestionId(id)
		f.SetReleaseResultCaps(true)
		if fromReader {
			c.post(m)
		} else {
			c.send(m)
		}
	}
	c.mu.Lock()
	q.finished = true
	c.retireLocked(id, q)
	c.mu.Unlock()
}

// Bootstrap returns the peer's bootstrap capability. Calls on it target
// the Bootstrap's answer, so they may be made at once; releasing the
// client sends the answer's Finish.
func (c *Conn) Bootstrap() capnp.Client {
	q := &question{bootstrap: true, resolved: true}
	c.mu.Lock()
	id, err := c.addQuestionLocked(q)
	c.mu.Unlock()
	if err != nil {
		return capnp.ErrorClient(err)
	}
	m := newMessage()
	b, err := m.NewBootstrap()
	if err != nil {
		return capnp.ErrorClient(err)
	}
	b.SetQuestionId(id)
	if err := c.send(m); err != nil {
		return capnp.ErrorClient(&exc.Exception{Type: exc.Disconnected, Prefix: "rpc", Cause: err})
	}
	return capnp.NewClient(&remote{c: c, id: id, q: q})
}

// remote is the hook of the peer's bootstrap capability.
type remote struct {
	c  *Conn
	id uint32 // the Bootstrap's question id
	q  *question
}

func (r *remote) Send(ctx context.Context, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	return r.c.call(ctx, r.id, s)
}

func (r *remote) Recv(_ context.Context, rc capnp.Recv) capnp.PipelineCaller {
	rc.Reject(errNoForwarding)
	return nil
}

func (r *remote) Brand() capnp.Brand { return capnp.Brand{} }

func (r *remote) String() string { return "twoparty.remote" }

// Shutdown runs when the last reference to the client is released.
func (r *remote) Shutdown() {
	if r.c.Err() == nil {
		r.c.sendFinish(r.id, r.q, false)
	}
}

// call writes a Call to the bootstrap answered to question target and
// returns its answer.
func (c *Conn) call(ctx context.Context, target uint32, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	m := newMessage()
	call, err := m.NewCall()
	if err != nil {
		return capnp.ErrorAnswer(s.Method, err), func() {}
	}
	t, err := call.NewTarget()
	if err != nil {
		return capnp.ErrorAnswer(s.Method, err), func() {}
	}
	pa, err := t.NewPromisedAnswer()
	if err != nil {
		return capnp.ErrorAnswer(s.Method, err), func() {}
	}
	pa.SetQuestionId(target)
	call.SetInterfaceId(s.Method.InterfaceID)
	call.SetMethodId(s.Method.MethodID)
	params, err := call.NewParams()
	if err != nil {
		return capnp.ErrorAnswer(s.Method, err), func() {}
	}
	if s.PlaceArgs != nil {
		args, err := capnp.NewStruct(m.Segment(), s.ArgsSize)
		if err == nil {
			err = params.SetContent(args.ToPtr())
		}
		if err == nil {
			err = s.PlaceArgs(args)
		}
		if err != nil {
			return capnp.ErrorAnswer(s.Method, exc.WrapError("place args", err)), func() {}
		}
		if m.Message().CapTable().Len() > 0 {
			return capnp.ErrorAnswer(s.Method, errNoCapsInCalls), func() {}
		}
	}

	q := &question{p: capnp.NewPromise(s.Method, noPipelining{}, nil)}
	c.mu.Lock()
	id, err := c.addQuestionLocked(q)
	c.mu.Unlock()
	if err != nil {
		return capnp.ErrorAnswer(s.Method, err), func() {}
	}
	call.SetQuestionId(id)
	if c.send(m) == nil && ctx.Done() != nil {
		c.mu.Lock()
		if !q.resolved {
			q.stop = context.AfterFunc(ctx, func() { c.cancelCall(id, q, context.Cause(ctx)) })
		}
		c.mu.Unlock()
	}
	// When the write failed, the Conn's failure has rejected q.
	return q.p.Answer(), func() { c.release(id, q) }
}

// cancelCall fails question id with cause and tells the peer with a Finish,
// unless it is already resolved.
func (c *Conn) cancelCall(id uint32, q *question, cause error) {
	c.mu.Lock()
	if q.resolved {
		c.mu.Unlock()
		return
	}
	q.resolved = true
	c.mu.Unlock()
	q.stopWatch()
	c.sendFinish(id, q, false)
	q.p.Reject(cause)
}

// release is a call's ReleaseFunc: it cancels the call if it is still
// running and frees the message its results live in.
func (c *Conn) release(id uint32, q *question) {
	c.cancelCall(id, q, errReleased)
	c.mu.Lock()
	results := q.results
	q.results = nil
	c.mu.Unlock()
	if results != nil {
		results.Release()
	}
}

func (c *Conn) handleReturn(msg *capnp.Message, m rpccp.Message) error {
	ret, err := m.Return()
	if err != nil {
		msg.Release()
		return protocolError("read return: " + err.Error())
	}
	var content capnp.Ptr
	var rerr error
	switch ret.Which() {
	case rpccp.Return_Which_results:
		payload, err := ret.Results()
		if err == nil {
			content, err = payload.Content()
		}
		if err != nil {
			rerr = exc.WrapError("rpc: read results", err)
		}
	case rpccp.Return_Which_exception:
		e, err := ret.Exception()
		if err != nil {
			rerr = exc.WrapError("rpc: read exception", err)
		} else {
			rerr = exception(e)
		}
	case rpccp.Return_Which_canceled:
		rerr = exc.New(exc.Failed, "rpc", "call canceled")
	default:
		rerr = exc.New(exc.Unimplemented, "rpc", "return kind not supported")
	}
	return c.complete(ret.AnswerId(), msg, content, rerr, ret.NoFinishNeeded())
}

// handleUnimplemented takes the peer's echo of a Call or Bootstrap it
// does not understand as that question's failure.
func (c *Conn) handleUnimplemented(m rpccp.Message) error {
	u, err := m.Unimplemented()
	if err != nil {
		return protocolError("read unimplemented: " + err.Error())
	}
	rerr := exc.New(exc.Unimplemented, "rpc", "the peer does not implement this message")
	switch u.Which() {
	case rpccp.Message_Which_call:
		if call, err := u.Call(); err == nil {
			return c.complete(call.QuestionId(), nil, capnp.Ptr{}, rerr, true)
		}
	case rpccp.Message_Which_bootstrap:
		if b, err := u.Bootstrap(); err == nil {
			return c.complete(b.QuestionId(), nil, capnp.Ptr{}, rerr, true)
		}
	}
	c.log.Debug("peer did not implement a message", "which", u.Which().String())
	return nil
}

// complete settles question id with its outcome: content held in msg
// (nil when there is none), or rerr.
func (c *Conn) complete(id uint32, msg *capnp.Message, content capnp.Ptr, rerr error, noFinishNeeded bool) error {
	c.mu.Lock()
	q := c.questions[id]
	if q == nil || q.returned {
		c.mu.Unlock()
		if msg != nil {
			msg.Release()
		}
		return protocolError("return for a question not asked")
	}
	q.returned = true
	if !q.bootstrap {
		c.asking.Add(-1)
	}
	mine := !q.resolved
	if q.bootstrap {
		// Calls go to the answer; the peer reports its failure on them.
		mine = false
	} else if mine {
		q.resolved = true
		q.finished = noFinishNeeded
		if rerr == nil {
			q.results = msg
		}
	}
	c.retireLocked(id, q)
	c.mu.Unlock()
	if !mine || rerr != nil {
		if msg != nil {
			msg.Release()
		}
	}
	if !mine {
		return nil
	}
	q.stopWatch()
	if !noFinishNeeded {
		c.sendFinish(id, q, true)
	}
	q.p.Resolve(content, rerr)
	return nil
}

// noPipelining refuses calls on a call's results before they arrive:
// results of the interfaces a Conn serves hold no capabilities.
type noPipelining struct{}

func (noPipelining) PipelineSend(_ context.Context, _ []capnp.PipelineOp, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	return capnp.ErrorAnswer(s.Method, errNoPipelining), func() {}
}

func (noPipelining) PipelineRecv(_ context.Context, _ []capnp.PipelineOp, r capnp.Recv) capnp.PipelineCaller {
	r.Reject(errNoPipelining)
	return nil
}
