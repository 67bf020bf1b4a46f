// Package testvec loads the official MLS interoperability test vectors
// (mls/testdata, from github.com/mlswg/mls-implementations) for the tests of
// the mls packages, and counts what each vector test ran.
package testvec

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
)

// Hex is a byte string that JSON carries as lower-case hex; JSON null
// decodes to nil.
type Hex []byte

// UnmarshalJSON implements json.Unmarshaler.
func (h *Hex) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*h = nil
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := hex.DecodeString(s)
	if err != nil {
		return err
	}
	*h = v
	return nil
}

// Dir is the directory that holds the vector files.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata")
}

// Load decodes the vector file name (e.g. "tree-math.json") into v.
func Load(t testing.TB, name string, v any) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(Dir(), name))
	if err != nil {
		t.Fatalf("read vectors: %v", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("decode %s: %v", name, err)
	}
}

// Tally counts the cases a vector test runs, passes and skips per cipher
// suite and logs the counts when the test ends, so a run shows at a glance
// that nothing was skipped.
type Tally struct {
	file string
	mu   sync.Mutex
	rows map[uint16]*row
}

type row struct{ run, passed, skipped int }

// NewTally returns a Tally for file that reports when t ends.
func NewTally(t *testing.T, file string) *Tally {
	tl := &Tally{file: file, rows: map[uint16]*row{}}
	t.Cleanup(func() { t.Log(tl.Summary()) })
	return tl
}

// Case runs f as the parallel subtest name of suite and counts its
// outcome. A case that calls t.Skip must give the reason, which the test
// output shows. Cases run in parallel with each other (the vector files of
// the big suites take seconds each under -race); the summary is logged
// once they have all finished.
func (tl *Tally) Case(t *testing.T, suite uint16, name string, f func(t *testing.T)) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		t.Parallel()
		t.Cleanup(func() { tl.record(suite, t.Skipped(), t.Failed()) })
		f(t)
	})
}

func (tl *Tally) record(suite uint16, skipped, failed bool) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	r := tl.rows[suite]
	if r == nil {
		r = &row{}
		tl.rows[suite] = r
	}
	r.run++
	switch {
	case skipped:
		r.skipped++
	case !failed:
		r.passed++
	}
}

// Summary returns one line per suite: run / passed / skipped.
func (tl *Tally) Summary() string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	ids := make([]int, 0, len(tl.rows))
	for id := range tl.rows {
		ids = append(ids, int(id))
	}
	sort.Ints(ids)
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s:", tl.file)
	for _, id := range ids {
		r := tl.rows[uint16(id)]
		suite := fmt.Sprintf("suite 0x%04x", id)
		if id == 0 {
			suite = "no suite"
		}
		fmt.Fprintf(&sb, "\n  %s: %d run, %d passed, %d skipped", suite, r.run, r.passed, r.skipped)
	}
	return sb.String()
}
