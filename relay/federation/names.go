package federation

import (
	"errors"
	"fmt"
	"strings"
)

// MaxDomainSize bounds a domain name (RFC 1035's 253 characters in text
// form).
const MaxDomainSize = 253

// ErrBadDomain reports a string that is not a domain name in the form this
// protocol uses.
var ErrBadDomain = errors.New("federation: not a domain name")

// CheckDomain reports whether d is a domain in canonical form: lowercase
// ASCII labels of letters, digits and '-' (not at either end of a label),
// 1 to 63 characters each, separated by single dots, at most MaxDomainSize
// in all, no trailing dot. "a.test" and "localhost" are domains; "A.test",
// "a..test" and "a.test." are not.
func CheckDomain(d string) error {
	if d == "" || len(d) > MaxDomainSize {
		return fmt.Errorf("%w: %q must be 1 to %d characters", ErrBadDomain, d, MaxDomainSize)
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("%w: %q has an empty label or one longer than 63 characters", ErrBadDomain, d)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%w: %q has a label that starts or ends with '-'", ErrBadDomain, d)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return fmt.Errorf("%w: %q may hold only lowercase letters, digits, '-' and '.'", ErrBadDomain, d)
			}
		}
	}
	return nil
}

// SplitAddress splits a user address "name@domain" at its last '@'. A
// string without '@' is a bare name: domain is "". The parts are not
// checked; names are checked by their home server, domains with
// CheckDomain.
func SplitAddress(addr string) (name, domain string) {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return addr, ""
	}
	return addr[:i], addr[i+1:]
}
