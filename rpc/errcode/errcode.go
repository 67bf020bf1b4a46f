// Package errcode defines the stable error codes of the quicproquo wire
// protocol and converts between them and Go errors.
//
// Every error a NodeService (or FederationService) method returns travels as
// a Cap'n Proto exception whose reason text is "<code>: <human message>",
// where <code> is one of the constants below. Clients branch on the code,
// never on the message. Codes are part of the wire contract: they may be
// added, never renamed.
package errcode

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"syscall"
)

// Code is a stable, machine-readable error class.
type Code string

// The codes, as listed in docs/PROTOCOL.md.
const (
	Unauthenticated    Code = "unauthenticated"     // missing, malformed, expired or unknown token
	PermissionDenied   Code = "permission-denied"   // authenticated, but not allowed to do this
	InvalidArgument    Code = "invalid-argument"    // malformed request field
	NotFound           Code = "not-found"           // the named object does not exist
	ResourceExhausted  Code = "resource-exhausted"  // a limit or rate limit was hit
	AlreadyExists      Code = "already-exists"      // the object to create exists
	FailedPrecondition Code = "failed-precondition" // not possible in the current state or on this transport
	Internal           Code = "internal"            // a bug or a storage failure on the answering side
)

var known = []Code{
	Unauthenticated, PermissionDenied, InvalidArgument, NotFound,
	ResourceExhausted, AlreadyExists, FailedPrecondition, Internal,
}

// Error is an error that carries a stable code. Its Error text is exactly
// the wire form "<code>: <message>".
type Error struct {
	Code    Code
	Message string
	// Cause, when set, is a failure on the answering side that its
	// operator must see and the caller must not: it stays out of the
	// wire text (it may name files and internals) and shows in the
	// answering side's logs (LogValue).
	Cause error
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Unwrap returns the cause, so that the answering side can test it.
func (e *Error) Unwrap() error { return e.Cause }

// LogValue is the wire text followed by the cause, for this side's logs.
func (e *Error) LogValue() slog.Value {
	if e.Cause == nil {
		return slog.StringValue(e.Error())
	}
	return slog.StringValue(e.Error() + " (cause: " + e.Cause.Error() + ")")
}

// Storage returns what a server answers when its own storage fails:
// resource-exhausted when the disk is full (the caller may try again
// later), internal otherwise, with the failure kept as the Cause.
func Storage(cause error) error {
	if errors.Is(cause, syscall.ENOSPC) {
		return &Error{Code: ResourceExhausted, Message: "the server's storage is full; try again later", Cause: cause}
	}
	return &Error{Code: Internal, Message: "storage failure", Cause: cause}
}

// Local reports whether err is a failure on this side (an *Error with a
// Cause), which the operator must see whatever its code.
func Local(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Cause != nil
}

// Is reports whether target is an *Error with the same code, so that
// errors.Is(err, errcode.New(errcode.NotFound, "")) works.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Code == e.Code
}

// New returns an error with the given code and message.
func New(code Code, msg string) error { return &Error{Code: code, Message: msg} }

// Errorf returns an error with the given code and a formatted message.
// Never format secrets, tokens or plaintext into it: it goes on the wire
// and into logs.
func Errorf(code Code, format string, args ...any) error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Of returns the code carried by err: directly when err wraps an *Error,
// otherwise parsed from the text of a Cap'n Proto exception received from
// a remote peer (capnp-go prepends its own prefixes such as "rpc: "). It
// returns "" for nil and Internal for an error with no recognizable code.
func Of(err error) Code {
	if err == nil {
		return ""
	}
	if c, ok := Find(err); ok {
		return c
	}
	return Internal
}

// Find is Of for callers that must tell an error with no recognizable
// code apart from one that says internal: ok is false for the former.
func Find(err error) (c Code, ok bool) {
	if err == nil {
		return "", false
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code, true
	}
	return parse(err.Error())
}

// Message returns the human message of err without its code and transport
// prefixes, for showing to a person.
func Message(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	s := err.Error()
	for _, c := range known {
		if i := strings.Index(s, string(c)+": "); i >= 0 && atBoundary(s, i) {
			return s[i+len(c)+2:]
		}
	}
	return s
}

// parse finds the first "<code>: " in s that starts s or follows ": ".
func parse(s string) (Code, bool) {
	best, bestAt := Code(""), -1
	for _, c := range known {
		i := strings.Index(s, string(c)+": ")
		for i >= 0 && !atBoundary(s, i) {
			j := strings.Index(s[i+1:], string(c)+": ")
			if j < 0 {
				i = -1
				break
			}
			i += 1 + j
		}
		if i >= 0 && (bestAt < 0 || i < bestAt) {
			best, bestAt = c, i
		}
	}
	return best, bestAt >= 0
}

func atBoundary(s string, i int) bool { return i == 0 || strings.HasSuffix(s[:i], ": ") }
