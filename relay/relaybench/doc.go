// Package relaybench holds the home server's benchmarks (no library code):
// durable enqueue→fetch throughput beside a bare quic-go stream echo of
// the same payloads in the same run, fetchWait wake-up latency, and the
// memory of a server holding thousands of waiting clients.
//
// Run them with scripts/bench-relay; figures go to docs/PERFORMANCE.md.
package relaybench
