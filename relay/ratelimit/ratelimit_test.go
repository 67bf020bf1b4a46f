package ratelimit

import (
	"fmt"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestAllowRefills(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	k := New(1, 3, c.now)
	for i := range 3 {
		if !k.Allow("a") {
			t.Fatalf("request %d within burst refused", i)
		}
	}
	if k.Allow("a") {
		t.Fatal("request beyond burst allowed")
	}
	if !k.Allow("b") {
		t.Fatal("another key shares a's bucket")
	}
	c.t = c.t.Add(time.Second)
	if !k.Allow("a") || k.Allow("a") {
		t.Fatal("one second should refill exactly one token")
	}
}

func TestBeginEndCountsOnlyFailures(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	k := New(1.0/60, 2, c.now)
	for range 10 { // successes cost nothing
		if !k.Begin("u") {
			t.Fatal("attempt refused although nothing failed")
		}
		k.End("u", false)
	}
	if !k.Begin("u") || !k.Begin("u") {
		t.Fatal("two open attempts within a burst of two refused")
	}
	if k.Begin("u") {
		t.Fatal("third open attempt allowed: open attempts must hold budget")
	}
	k.End("u", true)
	k.End("u", true)
	if k.Begin("u") {
		t.Fatal("attempt allowed after the budget was spent on failures")
	}
	c.t = c.t.Add(time.Minute)
	if !k.Begin("u") {
		t.Fatal("budget did not refill")
	}
}

func TestForgetsIdleBuckets(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	k := New(10, 1, c.now)
	k.SetMaxKeys(100)
	for i := range 100 {
		k.Allow(fmt.Sprint(i))
	}
	if k.Allow("new") {
		t.Fatal("new key allowed beyond MaxKeys while every bucket is in use")
	}
	c.t = c.t.Add(time.Second) // every bucket refills
	if !k.Allow("new") {
		t.Fatal("idle buckets were not forgotten")
	}
	if n := k.Len(); n != 1 {
		t.Fatalf("%d buckets held after the sweep, want 1", n)
	}
}

func TestNilAllowsEverything(t *testing.T) {
	var k *Keyed
	if !k.Allow("x") || !k.Begin("x") {
		t.Fatal("nil Keyed refused")
	}
	k.End("x", true)
}
