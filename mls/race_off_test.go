//go:build !race

package mls

// raceEnabled: see race_on_test.go.
const raceEnabled = false
