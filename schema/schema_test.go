package schema

import (
	"os"
	"strings"
	"testing"
)

// The Go annotations and the extensions block are the only lines
// schema/node.capnp may add to the upstream interface file; everything else
// must match it exactly.
var goAnnotationLines = map[string]bool{
	"": true,
	"# Go annotations only; everything below is spec/node.capnp unchanged.": true,
	`using Go = import "/go.capnp";`:                                        true,
	`$Go.package("schema");`:                                                true,
	`$Go.import("github.com/quicproquo/qpq/schema");`:                       true,
}

// Methods we add live between these two comment lines and use new ordinals
// only (DESIGN.md); everything outside them must be the spec unchanged.
const (
	extensionsBegin = "# ── quicproquo extensions"
	extensionsEnd   = "# ── end of extensions"
)

func TestNodeCapnpMatchesSpec(t *testing.T) {
	ours, err := os.ReadFile("node.capnp")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := os.ReadFile("testdata/spec-node.capnp")
	if err != nil {
		t.Fatal(err)
	}
	var stripped []string
	inExtensions := false
	for _, l := range strings.Split(string(ours), "\n") {
		switch {
		case strings.HasPrefix(l, extensionsBegin):
			inExtensions = true
			continue
		case strings.HasPrefix(l, extensionsEnd):
			inExtensions = false
			continue
		case inExtensions || goAnnotationLines[l]:
			continue
		}
		stripped = append(stripped, l)
	}
	var want []string
	for _, l := range strings.Split(string(spec), "\n") {
		if l != "" { // blank lines carry no meaning; the annotations add one
			want = append(want, l)
		}
	}
	got := stripped
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		for i := 0; i < len(want) && i < len(got); i++ {
			if want[i] != got[i] {
				t.Fatalf("schema/node.capnp differs from the spec at line %d:\n got: %q\nwant: %q", i+1, got[i], want[i])
			}
		}
		t.Fatalf("schema/node.capnp differs from the spec in length: %d vs %d lines", len(got), len(want))
	}
}

func TestFileAndInterfaceIDs(t *testing.T) {
	// NodeService's type id is derived from the file id; a changed file id or
	// interface name would change it and break every third-party client.
	if NodeService_TypeID != 0xd0c8a4cd19599e78 {
		t.Fatalf("NodeService type id = %#x", uint64(NodeService_TypeID))
	}
}
