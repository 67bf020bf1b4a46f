package nodetest

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// Log collects events reported from any goroutine and lets a test wait
// for one. The zero value is ready to use.
type Log[E any] struct {
	mu     sync.Mutex // guards the fields below
	events []E        // not taken yet
	ch     chan struct{}
}

// Add records e; pass it as an OnEvent callback.
func (l *Log[E]) Add(e E) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
	if l.ch != nil {
		close(l.ch)
		l.ch = nil
	}
}

// Reset forgets every event.
func (l *Log[E]) Reset() {
	l.mu.Lock()
	l.events = nil
	l.mu.Unlock()
}

// All returns the events not taken yet, in order.
func (l *Log[E]) All() []E {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]E(nil), l.events...)
}

// Wait takes the first event match accepts, waiting up to limit; at the
// limit it fails tb, listing what it saw.
func (l *Log[E]) Wait(tb testing.TB, what string, limit time.Duration, match func(E) bool) E {
	tb.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		for i, e := range l.events {
			if match(e) {
				l.events = append(l.events[:i:i], l.events[i+1:]...)
				l.mu.Unlock()
				return e
			}
		}
		if l.ch == nil {
			l.ch = make(chan struct{})
		}
		ch := l.ch
		l.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			var zero E
			tb.Fatalf("no %s within %v; events: %s", what, limit, l.describe())
			return zero
		}
	}
}

func (l *Log[E]) describe() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := ""
	for _, e := range l.events {
		s += fmt.Sprintf("\n\t%+v", e)
	}
	return s
}
