//go:build race

package mls

// raceEnabled is set when the tests run under the race detector, which
// makes the big-number arithmetic of some suites 20–50 times slower: the
// vector tests then check a sample of the members of each case (every
// member is checked without -race).
const raceEnabled = true
