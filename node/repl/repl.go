// Package repl is the command loop of `qpq chat`: it reads commands and
// lines of text, runs them on a node.Node, and prints what the node
// reports.
//
// For a person at a terminal it edits lines (history, cursor keys, see
// editor), keeps the prompt below incoming messages and colors names and
// errors. For programs — when input is not a terminal — it reads one
// command per line, and with JSON it prints every event as one JSON object
// per line (node.MarshalEvent; the contract is docs/CLI.md).
package repl

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/quicproquo/qpq/node"
	"github.com/quicproquo/qpq/node/conv"
	"github.com/quicproquo/qpq/node/payload"
	"github.com/quicproquo/qpq/rpc/errcode"
)

// CommandTimeout bounds one command (a /dm that must reach a peer, say).
const CommandTimeout = 30 * time.Second

// MaxLine bounds an input line: a text payload's limit plus room for a
// command.
const MaxLine = payload.MaxBodySize + 1024

// Done answers a command that succeeded, in JSON mode, so that a program
// knows when to send the next one. For a line of text, ID is the message
// id and Conversation where it went.
type Done struct {
	Command      string `json:"command"`
	Conversation string `json:"conversation,omitempty"`
	ID           string `json:"id,omitempty"`
}

// Help lists the commands (JSON mode's answer to /help).
type Help struct {
	Text string `json:"text"`
}

func (Done) Type() string { return "done" }
func (Help) Type() string { return "help" }

// Config says how the REPL talks.
type Config struct {
	// JSON prints events as JSON lines instead of text for people.
	JSON bool
	// Color uses ANSI colors (a terminal that shows them).
	Color bool
}

// REPL is one command loop. Event may be called from any goroutine.
type REPL struct {
	cfg Config
	out io.Writer
	ed  *editor // nil unless reading from a terminal

	mu      sync.Mutex // guards the fields below and writes to out
	n       *node.Node
	current string
}

// New returns a REPL that prints to out.
func New(out io.Writer, cfg Config) *REPL { return &REPL{cfg: cfg, out: out} }

// report prints a REPL's own event (an answer to a command) in order
// after what the node reported before it.
func (r *REPL) report(ev node.Event) {
	r.mu.Lock()
	n := r.n
	r.mu.Unlock()
	if n != nil {
		n.Report(ev)
		return
	}
	r.Event(ev)
}

// Event prints ev; pass it as the node's Config.OnEvent.
func (r *REPL) Event(ev node.Event) {
	// With no current conversation, the first one that speaks or that we
	// join becomes current, so a reply needs no /switch.
	if name := joinedOrSpoke(ev); name != "" {
		r.mu.Lock()
		if r.current == "" {
			r.current = name
			r.promptLocked()
		}
		r.mu.Unlock()
	}
	if r.cfg.JSON {
		b, err := node.MarshalEvent(ev)
		if err != nil {
			return
		}
		r.write(string(b) + "\n")
		return
	}
	if s := r.human(ev); s != "" {
		r.write(s)
	}
}

// joinedOrSpoke names the conversation ev says a message arrived in or we
// are now an active member of, or "".
func joinedOrSpoke(ev node.Event) string {
	switch e := ev.(type) {
	case node.Message:
		return e.Conversation
	case node.Conversation:
		if e.Status == conv.StatusActive.String() {
			return e.Name
		}
	}
	return ""
}

func (r *REPL) write(s string) {
	r.mu.Lock()
	ed := r.ed
	if ed == nil {
		io.WriteString(r.out, s)
		r.mu.Unlock()
		return
	}
	r.mu.Unlock()
	ed.print(s)
}

// Run reads commands from in until it ends, /quit, or ctx ends. When in
// is a terminal (fd ≥ 0 and IsTerminal), lines are edited in raw mode.
func (r *REPL) Run(ctx context.Context, n *node.Node, in io.Reader, fd int) error {
	r.mu.Lock()
	r.n = n
	r.mu.Unlock()
	lines := make(chan string)
	readErr := make(chan error, 1)
	if fd >= 0 && IsTerminal(fd) {
		st, err := makeRaw(fd)
		if err != nil {
			return err
		}
		defer restore(fd, st)
		ed := newEditor(in, r.out)
		r.mu.Lock()
		r.ed = ed
		r.promptLocked()
		r.mu.Unlock()
		defer func() {
			r.mu.Lock()
			r.ed = nil
			r.mu.Unlock()
		}()
		go func() {
			for {
				line, err := ed.readLine()
				if err != nil {
					readErr <- err
					return
				}
				select {
				case lines <- line:
				case <-ctx.Done():
					return
				}
			}
		}()
	} else {
		go func() {
			sc := bufio.NewScanner(in)
			sc.Buffer(make([]byte, 64<<10), MaxLine)
			for sc.Scan() {
				select {
				case lines <- sc.Text():
				case <-ctx.Done():
					return
				}
			}
			err := sc.Err()
			if err == nil {
				err = io.EOF
			}
			readErr <- err
		}()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-readErr:
			if errors.Is(err, io.EOF) || errors.Is(err, errInterrupt) {
				return nil
			}
			return err
		case line := <-lines:
			if quit := r.handle(ctx, line); quit {
				return nil
			}
		}
	}
}

const helpText = `commands:
  /dm NAME            open the conversation with NAME (and switch to it)
  /group create NAME  create a group (and switch to it)
  /invite NAME        add NAME to the current group
  /remove NAME        remove NAME from the current group
  /leave              leave the current conversation
  /update-key         renew your key in the current conversation
  /members            who is in the current conversation
  /list               every conversation
  /switch NAME        make NAME the current conversation
  /history [N]        the last N (20) messages of the current conversation
  /mesh peers         peers on the LAN and their links
  /whoami             your name, identity and addresses
  /help               this text
  /quit               leave qpq chat
anything else is sent as a message to the current conversation`

// handle runs one input line; it reports whether to quit.
func (r *REPL) handle(ctx context.Context, line string) (quit bool) {
	line = strings.TrimRight(line, "\r\n")
	if strings.TrimSpace(line) == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, CommandTimeout)
	defer cancel()
	if !strings.HasPrefix(line, "/") {
		r.send(line)
		return false
	}
	cmd, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
	arg = strings.TrimSpace(arg)
	n := r.n
	var err error
	done := Done{Command: strings.TrimPrefix(cmd, "/")}
	switch cmd {
	case "/quit", "/exit":
		return true
	case "/help":
		if r.cfg.JSON {
			r.report(Help{Text: helpText})
		} else {
			r.write(helpText + "\n")
		}
		return false
	case "/dm":
		var c node.Conversation
		if err = need(arg, "NAME"); err == nil {
			if c, err = n.DM(ctx, arg); err == nil {
				r.setCurrent(c.Name)
				done.Conversation = c.Name
			}
		}
	case "/group":
		sub, name, _ := strings.Cut(arg, " ")
		name = strings.TrimSpace(name)
		if sub != "create" || name == "" {
			err = usage("/group create NAME")
			break
		}
		var c node.Conversation
		if c, err = n.CreateGroup(name); err == nil {
			r.setCurrent(c.Name)
			done.Conversation = c.Name
		}
	case "/invite", "/remove":
		var cur string
		if cur, err = r.need(arg, "NAME"); err == nil {
			if cmd == "/invite" {
				err = n.Invite(ctx, cur, arg)
			} else {
				err = n.Remove(ctx, cur, arg)
			}
			done.Conversation = cur
		}
	case "/leave", "/update-key":
		var cur string
		if cur, err = r.needCurrent(); err == nil {
			if cmd == "/leave" {
				err = n.Leave(cur)
			} else {
				err = n.UpdateKey(cur)
			}
			done.Conversation = cur
		}
	case "/members":
		var cur string
		var c node.Conversation
		if cur, err = r.needCurrent(); err == nil {
			if c, err = n.Conversation(cur); err == nil {
				c.Current = true
				r.report(c)
			}
		}
	case "/list":
		cur := r.cur()
		for _, c := range n.Conversations() {
			c.Current = c.Name == cur
			r.report(c)
		}
	case "/switch":
		var c node.Conversation
		if err = need(arg, "NAME"); err == nil {
			if c, err = n.Conversation(arg); err == nil {
				r.setCurrent(c.Name)
				c.Current = true
				r.report(c)
				done.Conversation = c.Name
			}
		}
	case "/history":
		max := 20
		if arg != "" {
			if max, err = strconv.Atoi(arg); err != nil || max <= 0 {
				err = usage("/history [N], N > 0")
				break
			}
		}
		var cur string
		var hs []node.History
		if cur, err = r.needCurrent(); err == nil {
			if hs, err = n.History(cur, max); err == nil {
				for _, h := range hs {
					r.report(h)
				}
			}
		}
	case "/mesh":
		if arg != "peers" {
			err = usage("/mesh peers")
			break
		}
		for _, p := range n.Peers() {
			r.report(p)
		}
	case "/whoami":
		r.report(n.Whoami())
	default:
		err = errcode.Errorf(errcode.InvalidArgument, "unknown command %s (try /help)", cmd)
	}
	if err != nil {
		r.fail(done.Command, err)
		return false
	}
	if r.cfg.JSON {
		r.report(done)
	}
	return false
}

// send sends a line of text to the current conversation.
func (r *REPL) send(text string) {
	cur := r.cur()
	if cur == "" {
		r.fail("send", errcode.New(errcode.FailedPrecondition, "no current conversation: /dm NAME, /group create NAME or /switch NAME first"))
		return
	}
	id, err := r.n.Send(cur, text)
	if err != nil {
		r.fail("send", err)
		return
	}
	if r.cfg.JSON {
		r.report(Done{Command: "send", Conversation: cur, ID: id})
	}
}

func (r *REPL) fail(command string, err error) {
	ev := node.ErrorEvent(err)
	ev.Command = command
	r.report(ev)
}

func need(arg, what string) error {
	if arg == "" {
		return usage(what + " missing")
	}
	return nil
}

// need checks the argument and that there is a current conversation.
func (r *REPL) need(arg, what string) (string, error) {
	if err := need(arg, what); err != nil {
		return "", err
	}
	return r.needCurrent()
}

// needCurrent returns the current conversation, or an error if there is
// none.
func (r *REPL) needCurrent() (string, error) {
	cur := r.cur()
	if cur == "" {
		return "", errcode.New(errcode.FailedPrecondition, "no current conversation (/switch NAME)")
	}
	return cur, nil
}

func usage(s string) error { return errcode.Errorf(errcode.InvalidArgument, "usage: %s", s) }

func (r *REPL) cur() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.current
}

func (r *REPL) setCurrent(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.current = name
	r.promptLocked()
}

func (r *REPL) promptLocked() {
	if r.ed == nil {
		return
	}
	p := "> "
	if r.current != "" {
		p = "[" + visible(r.current) + "]> "
	}
	r.ed.setPrompt(r.color(bold, p), len([]rune(p)))
}

// ---- text for people ----

const (
	bold  = "1"
	dim   = "2"
	red   = "31"
	green = "32"
	cyan  = "36"
	yel   = "33"
)

func (r *REPL) color(code, s string) string {
	if !r.cfg.Color {
		return s
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}

func (r *REPL) human(ev node.Event) string {
	switch ev := ev.(type) {
	case node.Ready:
		return r.color(green, fmt.Sprintf("ready: you are %s — type /help\n", visible(ev.User)))
	case node.Peer:
		return r.color(dim, fmt.Sprintf("peer %s (%s): %s\n", visible(ev.User), node.Fingerprint(ev.Identity), ev.Link))
	case node.Conversation:
		members := make([]string, len(ev.Members))
		for i, m := range ev.Members {
			members[i] = visible(m)
			if i < len(ev.MemberIDs) {
				members[i] += " (" + node.Fingerprint(ev.MemberIDs[i]) + ")"
			}
		}
		return fmt.Sprintf("%s %s (%s, %s, epoch %d): %s\n", r.color(bold, "["+visible(ev.Name)+"]"), ev.Kind, ev.Status,
			shortHex(ev.ID), ev.Epoch, strings.Join(members, ", "))
	case node.Message:
		return fmt.Sprintf("%s %s %s\n", r.color(bold, "["+visible(ev.Conversation)+"]"), r.color(cyan, visible(ev.From)+":"), textBlock(ev.Text))
	case node.History:
		s := fmt.Sprintf("%s %s %s", r.color(dim, ev.Time.Local().Format("Jan 2 15:04")), r.color(cyan, visible(ev.From)+":"), textBlock(ev.Text))
		if len(ev.WaitingFor) > 0 {
			s += r.color(yel, " (waiting for "+visibleList(ev.WaitingFor)+")")
		}
		return s + "\n"
	case node.Sent:
		return "" // quiet: a person sees a failure or a wait, not every success
	case node.Delivery:
		conv, to := r.color(bold, "["+visible(ev.Conversation)+"]"), visible(ev.To)
		if ev.State == node.DeliveryResumed {
			return fmt.Sprintf("%s %s\n", conv, r.color(green, fmt.Sprintf("reached %s again (%s): sending what was kept", to, ev.Via)))
		}
		return fmt.Sprintf("%s %s\n", conv, r.color(yel, fmt.Sprintf("waiting for %s: %s — your messages are kept and go out once %s can be reached",
			to, visible(ev.Message), to)))
	case node.Error:
		return r.color(red, fmt.Sprintf("error (%s): %s\n", ev.Code, visible(ev.Message)))
	case node.Pin:
		return r.color(yel, fmt.Sprintf("home server %s: pinned certificate %s (first use; compare with your operator's)\n", visible(ev.Server), ev.Fingerprint))
	case node.Server:
		return r.color(dim, fmt.Sprintf("home server %s: %s\n", visible(ev.Server), ev.State))
	case node.Whoami:
		s := fmt.Sprintf("you are %s\n  identity    %s\n  fingerprint %s\n  peer id     %s\n", visible(ev.User), ev.Identity, ev.Fingerprint, ev.PeerID)
		for _, a := range ev.Addrs {
			s += "  address     " + a + "\n"
		}
		if ev.Server != "" {
			s += "  home server " + visible(ev.Server) + "\n"
		}
		return s
	case Help:
		return ev.Text + "\n"
	}
	return ""
}

func shortHex(s string) string { return "#" + s[:min(8, len(s))] }

// ReadPassword reads a line from in — the terminal fd — without echo,
// after writing prompt to w. It reads byte by byte so that nothing after
// the line is taken from in.
func ReadPassword(fd int, in io.Reader, w io.Writer, prompt string) ([]byte, error) {
	st, err := noEcho(fd)
	if err != nil {
		return nil, err
	}
	defer restore(fd, st)
	fmt.Fprint(w, prompt)
	defer fmt.Fprintln(w)
	var line []byte
	b := make([]byte, 1)
	for {
		n, err := in.Read(b)
		if n == 1 {
			if b[0] == '\n' {
				break
			}
			line = append(line, b[0])
			if len(line) > MaxLine {
				return nil, errors.New("repl: password too long")
			}
		}
		if err != nil {
			if len(line) > 0 && errors.Is(err, io.EOF) {
				break
			}
			return nil, err
		}
	}
	return []byte(strings.TrimRight(string(line), "\r")), nil
}
