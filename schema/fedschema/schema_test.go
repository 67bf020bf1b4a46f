package fedschema

import (
	"os"
	"strings"
	"testing"
)

// The wire identity of FederationService must not drift: its file id
// (which also fixes the interface's type id) and every method ordinal are
// part of the federation protocol.
func TestFederationWireIdentity(t *testing.T) {
	src, err := os.ReadFile("../federation.capnp")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(src), "\n@0xa2612b20fa289bef;\n") {
		t.Fatal("federation.capnp's file id changed")
	}
	if FederationService_TypeID != 0x94669b8c0729c5e8 {
		t.Fatalf("FederationService type id %#x changed", uint64(FederationService_TypeID))
	}
	for _, m := range []string{
		"relayEnqueue @0 ", "relayBatchEnqueue @1 ", "proxyFetchKeyPackage @2 ", "proxyFetchHybridKey @3 ",
		"proxyResolveUser @4 ", "proxyCreateChannel @5 ", "health @6 ",
	} {
		if !strings.Contains(string(src), m) {
			t.Errorf("federation.capnp lost %q", strings.TrimSpace(m))
		}
	}
}
