// Package mls implements the Messaging Layer Security protocol, RFC 9420,
// written from the RFC and checked against the official interoperability
// test vectors (mls/testdata).
//
// Subpackages hold the layers that stand on their own: codec (the TLS
// presentation language), treemath (array tree arithmetic) and cipher (the
// cipher suites and labeled crypto helpers).
package mls
