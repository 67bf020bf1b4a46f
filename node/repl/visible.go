package repl

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Text from other people reaches the terminal only through visible and
// textBlock. A message, a group name or an error a server sends may hold
// any UTF-8; its control characters would be commands to the terminal
// (move the cursor over earlier lines and rewrite them, clear the screen,
// set the window title or the clipboard), and bidi controls reorder what
// a line appears to say. So these are shown, not obeyed: C0 controls and
// DEL in caret notation (ESC as ^[, as cat -v writes them), C1 and
// bidi controls and the line and paragraph separators as <U+202E>.
// --json prints the exact text (JSON escapes controls).

// needsEscape reports whether r must be shown rather than sent as is.
// Tabs stay: they only move the cursor right on the same line.
func needsEscape(r rune) bool {
	switch {
	case r < 0x20:
		return r != '\t'
	case r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, r >= 0x202a && r <= 0x202e,
		r >= 0x2066 && r <= 0x2069, r == 0x2028, r == 0x2029:
		return true
	}
	return false
}

// escape writes r visibly.
func escape(b *strings.Builder, r rune) {
	switch {
	case r < 0x20:
		b.WriteByte('^')
		b.WriteByte(byte(r) + '@')
	case r == 0x7f:
		b.WriteString("^?")
	default:
		fmt.Fprintf(b, "<%U>", r)
	}
}

// visible returns s for one line of the terminal: every control character
// shown, line breaks included.
func visible(s string) string { return show(s, false) }

// visibleList returns names, each made visible, separated by commas.
func visibleList(names []string) string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = visible(n)
	}
	return strings.Join(out, ", ")
}

// textBlock returns a message's text for the terminal: as visible, but
// its line breaks stay, and every line after the first is indented, so
// that no line of a message can pass for a message of its own (someone
// else's, say).
func textBlock(s string) string { return show(s, true) }

func show(s string, lines bool) string {
	clean := true
	for _, r := range s {
		if needsEscape(r) || r == utf8.RuneError {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i, r := range s {
		switch {
		case lines && r == '\r' && strings.HasPrefix(s[i+1:], "\n"):
			// CRLF is one break.
		case lines && r == '\n':
			b.WriteString("\n  ")
		case needsEscape(r):
			escape(&b, r)
		default:
			b.WriteRune(r) // invalid UTF-8 becomes U+FFFD
		}
	}
	return b.String()
}
