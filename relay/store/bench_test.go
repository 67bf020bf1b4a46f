package store

import (
	"sync/atomic"
	"testing"
)

// BenchmarkEnqueueFetch is the store's share of a message's way through
// the server: one durable enqueue and one durable drain, one writer.
func BenchmarkEnqueueFetch(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	payload := make([]byte, 1024)
	in := Inbox{Recipient: key(2)}
	b.ResetTimer()
	for range b.N {
		if _, err := s.Enqueue(key(1), []Key{key(2)}, ChannelID{}, payload); err != nil {
			b.Fatal(err)
		}
		if got, err := s.Fetch(in, 0, 1<<20); err != nil || len(got) != 1 {
			b.Fatal(err)
		}
	}
}

// BenchmarkEnqueueFetchParallel: the same with 16 concurrent writers, each
// on its own inbox; group commit shares fsyncs between them.
func BenchmarkEnqueueFetchParallel(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	payload := make([]byte, 1024)
	var next atomic.Int32
	b.SetParallelism(8) // 16 goroutines on 2 CPUs
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		me := key(byte(next.Add(1)))
		in := Inbox{Recipient: me}
		for pb.Next() {
			if _, err := s.Enqueue(me, []Key{me}, ChannelID{}, payload); err != nil {
				b.Fatal(err)
			}
			if got, err := s.Fetch(in, 0, 1<<20); err != nil || len(got) != 1 {
				b.Fatal(err)
			}
		}
	})
}
