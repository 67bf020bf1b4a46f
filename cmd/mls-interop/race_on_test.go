//go:build race

package main

// deepRandomDefault is how much of deep_random.json runs by default under
// the race detector, which makes each step about ten times slower: a
// prefix with 17 Commits, an external join and a resync, in groups of up
// to 60 members.
const deepRandomDefault = 300
