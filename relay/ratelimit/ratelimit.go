// Package ratelimit keeps one token bucket (golang.org/x/time/rate) per
// key — a token, an address, a username — and forgets buckets that have
// refilled, so memory follows the number of recently active keys.
//
// A nil *Keyed allows everything: that is how limits are turned off.
package ratelimit

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultMaxKeys bounds the buckets a Keyed holds. Beyond it a new key is
// refused until idle buckets can be forgotten: under a flood of fresh
// keys, failing closed is the safe side.
const DefaultMaxKeys = 1 << 20

// Keyed is a set of token buckets by key. It is safe for concurrent use.
type Keyed struct {
	limit   rate.Limit
	burst   int
	maxKeys int
	now     func() time.Time

	mu        sync.Mutex // guards the fields below
	buckets   map[string]*bucket
	sweepAt   int // sweep idle buckets when the map grows to this size
	sweepBase int
}

type bucket struct {
	lim *rate.Limiter
	// outstanding counts attempts begun and not yet ended (Begin/End);
	// they hold budget until they end.
	outstanding int
}

// New returns buckets refilling at perSecond up to burst. now may be nil
// (time.Now).
func New(perSecond float64, burst int, now func() time.Time) *Keyed {
	if now == nil {
		now = time.Now
	}
	return &Keyed{
		limit:     rate.Limit(perSecond),
		burst:     max(burst, 1),
		maxKeys:   DefaultMaxKeys,
		now:       now,
		buckets:   make(map[string]*bucket),
		sweepAt:   1024,
		sweepBase: 1024,
	}
}

// SetMaxKeys changes the bucket cap (tests use small ones).
func (k *Keyed) SetMaxKeys(n int) {
	k.mu.Lock()
	k.maxKeys = n
	k.mu.Unlock()
}

// getLocked returns key's bucket, creating it; nil when the cap is hit.
func (k *Keyed) getLocked(key string, now time.Time) *bucket {
	if b := k.buckets[key]; b != nil {
		return b
	}
	if len(k.buckets) >= k.sweepAt || len(k.buckets) >= k.maxKeys {
		k.sweepLocked(now)
	}
	if len(k.buckets) >= k.maxKeys {
		return nil
	}
	b := &bucket{lim: rate.NewLimiter(k.limit, k.burst)}
	k.buckets[key] = b
	return b
}

// sweepLocked forgets buckets that are full and idle: a fresh bucket
// would behave the same, so nothing is lost.
func (k *Keyed) sweepLocked(now time.Time) {
	for key, b := range k.buckets {
		if b.outstanding == 0 && b.lim.TokensAt(now) >= float64(k.burst) {
			delete(k.buckets, key)
		}
	}
	k.sweepAt = max(2*len(k.buckets), k.sweepBase)
}

// Allow takes one token from key's bucket and reports whether there was
// one.
func (k *Keyed) Allow(key string) bool {
	if k == nil {
		return true
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	b := k.getLocked(key, now)
	return b != nil && b.lim.AllowN(now, 1)
}

// Begin starts an attempt that costs a token only if it fails (a login).
// It reports false when key's budget, less the attempts still open, is
// spent. Every true Begin must be followed by one End.
func (k *Keyed) Begin(key string) bool {
	if k == nil {
		return true
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	b := k.getLocked(key, now)
	if b == nil || b.lim.TokensAt(now) < float64(b.outstanding+1) {
		return false
	}
	b.outstanding++
	return true
}

// End closes an attempt opened by Begin; a failed one takes its token.
func (k *Keyed) End(key string, failed bool) {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	b := k.buckets[key]
	if b == nil {
		return // cannot happen while outstanding > 0; be safe anyway
	}
	b.outstanding = max(b.outstanding-1, 0)
	if failed {
		b.lim.AllowN(now, 1)
	}
}

// Len returns how many buckets are held.
func (k *Keyed) Len() int {
	if k == nil {
		return 0
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.buckets)
}
