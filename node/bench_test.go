package node

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/quicproquo/qpq/internal/lan/lantest"
)

// BenchmarkDirectSend: two nodes in this process on loopback, linked
// directly; one message at a time from Send to the Message event at the
// peer. The same path as BenchmarkLANDirect in node/e2e without the
// processes, their pipes and the bridge.
func BenchmarkDirectSend(b *testing.B) {
	alice, bob := benchNode(b, "alice"), benchNode(b, "bob")
	alice.n.AddPeer(bob.n.AddrInfo())
	wait(alice, "link", func(p Peer) bool { return p.User == "bob" && p.Link == "direct" })
	if _, err := alice.n.DM(context.Background(), "bob"); err != nil {
		b.Fatal(err)
	}
	if _, err := bob.n.DM(context.Background(), "alice"); err != nil {
		b.Fatal(err)
	}
	wait(bob, "DM", func(c Conversation) bool { return c.Name == "alice" && len(c.Members) == 2 })
	var ds []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		text := fmt.Sprint("m", i)
		start := time.Now()
		if _, err := alice.n.Send("bob", text); err != nil {
			b.Fatal(err)
		}
		bob.waitText("alice", text)
		ds = append(ds, time.Since(start))
		alice.log.Reset()
	}
	b.StopTimer()
	p50, p99 := lantest.Percentiles(ds)
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
}
