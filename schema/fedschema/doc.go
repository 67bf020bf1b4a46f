// Package fedschema holds the Go code generated from schema/federation.capnp
// (file id @0xa2612b20fa289bef): FederationService, which home servers of
// different domains call on each other over mutually authenticated QUIC.
// scripts/gen-schema regenerates it; its own package keeps capnpc-go's
// per-package schema registration apart from package schema's.
//
// This package imports nothing of ours.
package fedschema
