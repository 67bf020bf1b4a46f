// Package mlspb is the generated protobuf and gRPC code for the IETF MLS
// working group's interop harness (mls_client.proto, copied verbatim from
// github.com/mlswg/mls-implementations). Regenerate with scripts/gen-interop;
// `scripts/gen-interop --check` fails when it is stale.
package mlspb
