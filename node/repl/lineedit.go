package repl

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sync"
	"unicode"
)

// errInterrupt is ReadLine's error for ^C on an empty line.
var errInterrupt = errors.New("interrupted")

// maxHistory bounds the lines the editor remembers.
const maxHistory = 500

// editor reads lines from a terminal in raw mode, with editing and
// history, and lets other goroutines print above the line being edited
// (messages arrive while the user types).
//
// Keys: printable text inserts; ←/→, Home/End, ^A/^E move; Backspace,
// Delete, ^U (to start), ^K (to end), ^W (word) delete; ↑/↓ walk the
// history; Enter submits; ^C clears the line (quits on an empty one); ^D
// on an empty line is end of input; ^L redraws.
type editor struct {
	in  *bufio.Reader
	out io.Writer

	mu      sync.Mutex // guards the fields below and writes to out
	prompt  string
	plen    int // printed width of prompt
	buf     []rune
	pos     int
	hist    [][]rune
	histPos int
	saved   []rune // the line being written when the history walk began
	editing bool
}

func newEditor(in io.Reader, out io.Writer) *editor {
	return &editor{in: bufio.NewReader(in), out: out}
}

// setPrompt changes the prompt; width is its printed width (without
// color codes).
func (e *editor) setPrompt(p string, width int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.prompt, e.plen = p, width
	if e.editing {
		e.redrawLocked()
	}
}

// print writes s (whole lines) above the line being edited.
func (e *editor) print(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.editing {
		io.WriteString(e.out, "\r\x1b[K")
	}
	io.WriteString(e.out, s)
	if e.editing {
		e.redrawLocked()
	}
}

func (e *editor) redrawLocked() {
	fmt.Fprintf(e.out, "\r%s%s\x1b[K", e.prompt, string(e.buf))
	if back := len(e.buf) - e.pos; back > 0 {
		fmt.Fprintf(e.out, "\x1b[%dD", back)
	}
}

// readLine reads one line. It returns io.EOF on ^D at an empty line and
// errInterrupt on ^C at an empty line.
func (e *editor) readLine() (string, error) {
	e.mu.Lock()
	e.buf, e.pos, e.histPos, e.saved, e.editing = nil, 0, len(e.hist), nil, true
	e.redrawLocked()
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.editing = false
		e.mu.Unlock()
	}()
	for {
		r, _, err := e.in.ReadRune()
		if err != nil {
			return "", err
		}
		e.mu.Lock()
		line, done, err := e.keyLocked(r)
		e.mu.Unlock()
		if done || err != nil {
			return line, err
		}
	}
}

// keyLocked handles one key; done reports a finished line.
func (e *editor) keyLocked(r rune) (line string, done bool, err error) {
	switch r {
	case '\r', '\n':
		line = string(e.buf)
		io.WriteString(e.out, "\r\n")
		if line != "" && (len(e.hist) == 0 || string(e.hist[len(e.hist)-1]) != line) {
			e.hist = append(e.hist, []rune(line))
			if len(e.hist) > maxHistory {
				e.hist = e.hist[1:]
			}
		}
		e.buf, e.pos = nil, 0
		return line, true, nil
	case 3: // ^C
		if len(e.buf) == 0 {
			io.WriteString(e.out, "\r\n")
			return "", true, errInterrupt
		}
		e.buf, e.pos = nil, 0
	case 4: // ^D
		if len(e.buf) == 0 {
			io.WriteString(e.out, "\r\n")
			return "", true, io.EOF
		}
		e.deleteLocked(e.pos, e.pos+1)
	case 1: // ^A
		e.pos = 0
	case 5: // ^E
		e.pos = len(e.buf)
	case 2: // ^B
		e.pos = max(0, e.pos-1)
	case 6: // ^F
		e.pos = min(len(e.buf), e.pos+1)
	case 11: // ^K
		e.buf = e.buf[:e.pos]
	case 21: // ^U
		e.deleteLocked(0, e.pos)
	case 23: // ^W
		start := e.pos
		for start > 0 && unicode.IsSpace(e.buf[start-1]) {
			start--
		}
		for start > 0 && !unicode.IsSpace(e.buf[start-1]) {
			start--
		}
		e.deleteLocked(start, e.pos)
	case 12: // ^L
		io.WriteString(e.out, "\x1b[H\x1b[2J")
	case 127, 8: // Backspace
		if e.pos > 0 {
			e.deleteLocked(e.pos-1, e.pos)
		}
	case 27: // an escape sequence
		e.escapeLocked()
	default:
		if unicode.IsPrint(r) {
			e.buf = append(e.buf[:e.pos], append([]rune{r}, e.buf[e.pos:]...)...)
			e.pos++
		}
	}
	e.redrawLocked()
	return "", false, nil
}

func (e *editor) deleteLocked(from, to int) {
	to = min(to, len(e.buf))
	if from >= to {
		return
	}
	e.buf = append(e.buf[:from], e.buf[to:]...)
	e.pos = from
}

// escapeLocked reads the rest of an escape sequence: CSI (ESC [ params
// final) or SS3 (ESC O final). Reading while holding the lock is fine:
// the bytes of a sequence arrive together.
func (e *editor) escapeLocked() {
	b, err := e.in.ReadByte()
	if err != nil {
		return
	}
	var params []byte
	final := byte(0)
	switch b {
	case '[':
		for {
			c, err := e.in.ReadByte()
			if err != nil {
				return
			}
			if c >= 0x40 && c <= 0x7e {
				final = c
				break
			}
			params = append(params, c)
		}
	case 'O':
		if final, err = e.in.ReadByte(); err != nil {
			return
		}
	default:
		return
	}
	switch {
	case final == 'D':
		e.pos = max(0, e.pos-1)
	case final == 'C':
		e.pos = min(len(e.buf), e.pos+1)
	case final == 'H', final == '~' && (string(params) == "1" || string(params) == "7"):
		e.pos = 0
	case final == 'F', final == '~' && (string(params) == "4" || string(params) == "8"):
		e.pos = len(e.buf)
	case final == '~' && string(params) == "3":
		e.deleteLocked(e.pos, e.pos+1)
	case final == 'A':
		e.historyLocked(-1)
	case final == 'B':
		e.historyLocked(+1)
	}
}

// historyLocked moves through the history by step.
func (e *editor) historyLocked(step int) {
	next := e.histPos + step
	if next < 0 || next > len(e.hist) {
		return
	}
	if e.histPos == len(e.hist) {
		e.saved = append([]rune(nil), e.buf...)
	}
	e.histPos = next
	if next == len(e.hist) {
		e.buf = append([]rune(nil), e.saved...)
	} else {
		e.buf = append([]rune(nil), e.hist[next]...)
	}
	e.pos = len(e.buf)
}
