package store

import "sync"

// hub wakes the waiters of an inbox when a message for it commits. Each
// waiter owns a channel with room for one value; a notification that
// finds it full is dropped, since one pending wake-up is as good as many.
type hub struct {
	mu      sync.Mutex                      // guards waiters
	waiters map[string]map[*waiter]struct{} // by queue id
}

type waiter struct{ ch chan struct{} }

func (h *hub) init() { h.waiters = make(map[string]map[*waiter]struct{}) }

func (h *hub) subscribe(id string) (<-chan struct{}, func()) {
	w := &waiter{ch: make(chan struct{}, 1)}
	h.mu.Lock()
	set := h.waiters[id]
	if set == nil {
		set = make(map[*waiter]struct{})
		h.waiters[id] = set
	}
	set[w] = struct{}{}
	h.mu.Unlock()
	var once sync.Once
	return w.ch, func() {
		once.Do(func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			delete(set, w)
			if len(h.waiters[id]) == 0 {
				delete(h.waiters, id)
			}
		})
	}
}

func (h *hub) notify(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.waiters[id] {
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
}

// waiting returns how many waiters are subscribed, for tests and metrics.
func (h *hub) waiting() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, set := range h.waiters {
		n += len(set)
	}
	return n
}
