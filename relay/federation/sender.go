package federation

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/quicproquo/qpq/rpc/errcode"
)

// send delivers the store's queue for pc's peer until ctx ends: in order,
// one delivery at a time, each removed only once the peer committed it
// (or refused it for good), retrying with backoff while the peer cannot
// take it.
func (f *Federation) send(ctx context.Context, pc *peerConn) {
	domain := pc.p.Domain
	log := f.log.With("peer", domain)
	backoff := f.cfg.RetryMin
	failing := false
	for {
		// Subscribe before looking, so a delivery committed in between
		// still wakes us.
		wake, stop := f.st.WaitRelay(domain)
		it, ok, err := f.st.NextRelay(domain)
		if err == nil && !ok {
			select {
			case <-wake:
			case <-ctx.Done():
			}
		}
		stop()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			log.Error("federation: reading the queue", "err", err)
			if !f.sleep(ctx, &backoff) {
				return
			}
			continue
		}
		if !ok {
			continue
		}
		dup, err := f.relay(ctx, pc, it)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil:
			result := "ok"
			if dup {
				result = "duplicate"
			}
			f.m.relayed.WithLabelValues(domain, result).Inc()
			if failing {
				log.Info("federation: delivering again", "seq", it.Seq)
				failing = false
			}
		case refusedForGood(err):
			f.m.relayed.WithLabelValues(domain, "dropped").Inc()
			// The client was answered when the delivery was queued; say
			// loudly that it will not arrive.
			log.Error("federation: peer refused a delivery for good; dropped", "seq", it.Seq, "recipients", len(it.Recipients), "err", err)
		default:
			f.m.relayed.WithLabelValues(domain, "retry").Inc()
			if !failing {
				log.Warn("federation: cannot deliver; retrying with backoff", "seq", it.Seq, "err", err)
				failing = true
			} else {
				log.Debug("federation: still cannot deliver", "seq", it.Seq, "err", err)
			}
			if !f.sleep(ctx, &backoff) {
				return
			}
			continue
		}
		backoff = f.cfg.RetryMin
		if err := f.st.RemoveRelay(domain, it.Seq); err != nil {
			// It goes out again; the peer recognizes the repeat.
			log.Error("federation: removing a delivered item", "seq", it.Seq, "err", err)
			if !f.sleep(ctx, &backoff) {
				return
			}
		}
	}
}

// refusedForGood reports an answer from the peer that sending the same
// delivery again cannot change.
func refusedForGood(err error) bool {
	var pe *PeerError
	if !errors.As(err, &pe) {
		return false // not an answer: the peer was not reached
	}
	switch pe.Err.Code {
	case errcode.InvalidArgument, errcode.PermissionDenied, errcode.NotFound, errcode.AlreadyExists, errcode.FailedPrecondition:
		return true
	}
	return false
}

// sleep waits a jittered backoff (in its upper half) and doubles it up to
// RetryMax; false if ctx ended.
func (f *Federation) sleep(ctx context.Context, backoff *time.Duration) bool {
	d := *backoff/2 + rand.N(*backoff/2+1)
	*backoff = min(2**backoff, f.cfg.RetryMax)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
