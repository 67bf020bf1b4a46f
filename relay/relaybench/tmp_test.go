package relaybench

import (
	"context"
	"testing"

	"github.com/quicproquo/qpq/relay/store"
)

func BenchmarkTmpHealth(b *testing.B) {
	s := startServer(b)
	c := login(b, s.addr, s.fp, "x")
	b.ResetTimer()
	for range b.N {
		c.c.Health(context.Background())
	}
}

func BenchmarkTmpEnqueue(b *testing.B) {
	s := startServer(b)
	c := login(b, s.addr, s.fp, "x")
	p := make([]byte, 1024)
	b.ResetTimer()
	for range b.N {
		c.c.Enqueue(context.Background(), c.id, nil, p)
	}
}

func BenchmarkTmpFetchEmpty(b *testing.B) {
	s := startServer(b)
	c := login(b, s.addr, s.fp, "x")
	b.ResetTimer()
	for range b.N {
		c.c.Fetch(context.Background(), c.id, nil, 0)
	}
}

func BenchmarkTmpEnqueueSmall(b *testing.B) {
	s := startServer(b)
	c := login(b, s.addr, s.fp, "x")
	p := make([]byte, 16)
	b.ResetTimer()
	for range b.N {
		c.c.Enqueue(context.Background(), c.id, nil, p)
	}
}

func BenchmarkTmpStoreEnqueue(b *testing.B) {
	s := startServer(b)
	c := login(b, s.addr, s.fp, "x")
	p := make([]byte, 1024)
	st := s.relay.Store()
	k := store.Key(c.id)
	b.ResetTimer()
	for range b.N {
		st.Enqueue(k, []store.Key{k}, store.ChannelID{}, p)
	}
}

func BenchmarkTmpFetchOne(b *testing.B) {
	s := startServer(b)
	c := login(b, s.addr, s.fp, "x")
	p := make([]byte, 1024)
	st := s.relay.Store()
	k := store.Key(c.id)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		st.Enqueue(k, []store.Key{k}, store.ChannelID{}, p)
		b.StartTimer()
		c.c.Fetch(context.Background(), c.id, nil, 0)
	}
}

