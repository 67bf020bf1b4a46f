//go:build !race

package main

// deepRandomDefault is how much of deep_random.json runs by default: a
// prefix (a valid script on its own, since steps refer only to earlier
// ones) with 53 Commits, 5 external joins (2 of them resyncs) and groups
// of up to 67 members. -interop.full runs all 1670 steps.
const deepRandomDefault = 960
