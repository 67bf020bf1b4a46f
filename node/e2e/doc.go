// Package e2e holds the end-to-end tests of quicproquo: real `qpq chat
// --json` processes (and `qpq serve` for a home server), each in its own
// network namespace on a throwaway LAN (internal/lan), driven through
// stdin and read from stdout exactly as docs/CLI.md describes. They need
// root (CI runs as root) and skip otherwise. The package has no non-test
// code.
package e2e
