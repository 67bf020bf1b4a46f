// Package lantest runs Go tests and benchmarks on throwaway LANs (package
// lan): it builds a LAN that is torn down when the test ends (pass, fail
// or panic), and runs code inside a node's namespace as a child process.
//
// Sockets of libp2p, quic-go and mDNS are opened on goroutines a test does
// not control, so a test never moves its own threads into a namespace.
// Instead Spawn re-executes the test binary under "ip netns exec", with
// QPQ_LAN_CHILD naming what the child should be. The package's TestMain
// hands such a process to Serve before any test runs:
//
//	func TestMain(m *testing.M) {
//		if lantest.Mode() != "" {
//			lantest.Serve(childHandler)
//		}
//		os.Exit(m.Run())
//	}
//
// Parent and child talk JSON lines over the child's stdin and stdout:
//
//	parent → child  {"id":1,"op":"start","args":{…}}
//	child → parent  {"id":1,"result":{…}}  or  {"id":1,"error":"…"}
//	child → parent  {"event":{…}}          at any time (Emit)
//
// A child exits when its stdin closes; Spawn's cleanup closes it, waits a
// bounded time, then kills. The child is also killed if the parent dies.
// A child's stderr is shown when its test fails.
package lantest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/quicproquo/qpq/internal/lan"
	"go.uber.org/goleak"
)

const (
	childEnv = "QPQ_LAN_CHILD"

	// CallTimeout bounds Call when the test gives no deadline.
	CallTimeout = 30 * time.Second
	exitTimeout = 10 * time.Second
	maxLine     = 4 << 20
)

// Require skips tb when LANs cannot be built here (not root, no ip(8)).
func Require(tb testing.TB) {
	tb.Helper()
	if err := lan.Available(); err != nil {
		tb.Skipf("skipping network-namespace test: %v", err)
	}
}

// New builds a LAN of n nodes that is removed when tb ends.
func New(tb testing.TB, n int) *lan.LAN {
	tb.Helper()
	Require(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := lan.New(ctx, lan.Config{Nodes: n})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := l.Close(); err != nil {
			tb.Errorf("removing LAN %s: %v", l.ID, err)
		}
	})
	return l
}

// Context returns a context that ends at tb's deadline (if any) less a
// margin for cleanup, or after max, whichever is first.
func Context(tb testing.TB, max time.Duration) context.Context {
	end := time.Now().Add(max)
	if t, ok := tb.(interface{ Deadline() (time.Time, bool) }); ok {
		if d, ok := t.Deadline(); ok && d.Add(-15*time.Second).Before(end) {
			end = d.Add(-15 * time.Second)
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), end)
	tb.Cleanup(cancel)
	return ctx
}

// Child is a copy of the test binary running in a LAN node's namespace.
type Child struct {
	Name string

	tb     testing.TB
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *syncBuffer
	readWG sync.WaitGroup

	writeMu sync.Mutex // serializes request lines

	mu      sync.Mutex // guards the fields below
	nextID  int
	pending map[int]chan reply
	events  []json.RawMessage
	eventCh chan struct{} // closed and replaced when events grow
	exited  bool
	readErr error
}

type reply struct {
	ID     int             `json:"id,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
	Event  json.RawMessage `json:"event,omitempty"`
}

type request struct {
	ID   int    `json:"id"`
	Op   string `json:"op"`
	Args any    `json:"args,omitempty"`
}

// Spawn starts the test binary in node's namespace as a child of the given
// mode, with env added to its environment. The child is stopped when tb
// ends.
func Spawn(tb testing.TB, l *lan.LAN, node int, mode string, env ...string) *Child {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd, err := l.Command(context.Background(), node, exe, "-test.run=^$")
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Env = append(append(os.Environ(), childEnv+"="+mode), env...)
	DieWithParent(cmd)
	c := &Child{
		Name:    fmt.Sprintf("%s@n%d", mode, node),
		tb:      tb,
		cmd:     cmd,
		stderr:  &syncBuffer{},
		pending: make(map[int]chan reply),
		eventCh: make(chan struct{}),
	}
	cmd.Stderr = c.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("starting child %s: %v", c.Name, err)
	}
	c.readWG.Add(1)
	go c.read(stdout)
	tb.Cleanup(c.stop)
	return c
}

func (c *Child) read(r io.Reader) {
	defer c.readWG.Done()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	for sc.Scan() {
		var rp reply
		if err := json.Unmarshal(sc.Bytes(), &rp); err != nil {
			c.fail(fmt.Errorf("child %s wrote a bad line %q: %v", c.Name, sc.Text(), err))
			return
		}
		c.mu.Lock()
		if rp.Event != nil {
			c.events = append(c.events, rp.Event)
			close(c.eventCh)
			c.eventCh = make(chan struct{})
		} else if ch, ok := c.pending[rp.ID]; ok {
			delete(c.pending, rp.ID)
			ch <- rp
		}
		c.mu.Unlock()
	}
	err := sc.Err()
	if err == nil {
		err = fmt.Errorf("child %s exited", c.Name)
	}
	c.fail(err)
}

// fail ends every pending call and event wait with err.
func (c *Child) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.readErr == nil {
		c.readErr = err
		close(c.eventCh)
		c.eventCh = make(chan struct{})
	}
	for id, ch := range c.pending {
		delete(c.pending, id)
		ch <- reply{ID: id, Error: err.Error()}
	}
}

// Do sends op with args and decodes the child's result into result (which
// may be nil). It returns the child's error, or ctx's.
func (c *Child) Do(ctx context.Context, op string, args, result any) error {
	c.mu.Lock()
	if c.readErr != nil {
		c.mu.Unlock()
		return c.readErr
	}
	c.nextID++
	id := c.nextID
	ch := make(chan reply, 1)
	c.pending[id] = ch
	c.mu.Unlock()

	line, err := json.Marshal(request{ID: id, Op: op, Args: args})
	if err != nil {
		return err
	}
	c.writeMu.Lock()
	_, err = c.stdin.Write(append(line, '\n'))
	c.writeMu.Unlock()
	if err != nil {
		return fmt.Errorf("child %s: %v", c.Name, err)
	}
	select {
	case rp := <-ch:
		if rp.Error != "" {
			return fmt.Errorf("child %s: %s: %s", c.Name, op, rp.Error)
		}
		if result != nil {
			return json.Unmarshal(rp.Result, result)
		}
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
		return fmt.Errorf("child %s: %s: %w", c.Name, op, ctx.Err())
	}
}

// Call is Do bounded by CallTimeout that fails the test on error. Call it
// from the test goroutine only.
func (c *Child) Call(op string, args, result any) {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), CallTimeout)
	defer cancel()
	if err := c.Do(ctx, op, args, result); err != nil {
		c.tb.Fatal(err)
	}
}

// NextEvent removes and returns the first event for which match returns
// true, waiting for it until ctx ends. Events that do not match stay
// queued for later calls.
func (c *Child) NextEvent(ctx context.Context, match func(json.RawMessage) bool) (json.RawMessage, error) {
	for {
		c.mu.Lock()
		for i, ev := range c.events {
			if match(ev) {
				c.events = append(c.events[:i:i], c.events[i+1:]...)
				c.mu.Unlock()
				return ev, nil
			}
		}
		wait, readErr := c.eventCh, c.readErr
		c.mu.Unlock()
		if readErr != nil {
			return nil, readErr
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, fmt.Errorf("child %s: waiting for an event: %w", c.Name, ctx.Err())
		}
	}
}

// WaitEvent is NextEvent bounded by timeout, decoding the event into v and
// failing the test if none matches in time. match sees the event decoded
// into v.
func WaitEvent[T any](c *Child, timeout time.Duration, match func(T) bool) T {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var got T
	_, err := c.NextEvent(ctx, func(raw json.RawMessage) bool {
		var v T
		if json.Unmarshal(raw, &v) != nil || !match(v) {
			return false
		}
		got = v
		return true
	})
	if err != nil {
		c.tb.Fatal(err)
	}
	return got
}

// stop closes the child's stdin, waits for it to exit (killing it after
// exitTimeout) and reports a non-zero exit, such as a race report's 66.
func (c *Child) stop() {
	c.mu.Lock()
	if c.exited {
		c.mu.Unlock()
		return
	}
	c.exited = true
	c.mu.Unlock()

	c.stdin.Close()
	// Wait reaps the process and closes stdout, so it must come after
	// the reader has seen EOF.
	readDone := make(chan struct{})
	go func() { c.readWG.Wait(); close(readDone) }()
	killed := false
	select {
	case <-readDone:
	case <-time.After(exitTimeout):
		c.cmd.Process.Kill()
		killed = true
		<-readDone
	}
	err := c.cmd.Wait()
	if killed {
		err = fmt.Errorf("did not exit within %v of stdin closing; killed (%v)", exitTimeout, err)
	}
	if err != nil {
		c.tb.Errorf("child %s: %v", c.Name, err)
	}
	if c.tb.Failed() || os.Getenv("QPQ_LAN_VERBOSE") != "" {
		c.tb.Logf("child %s stderr:\n%s", c.Name, c.stderr.String())
	}
}

// Stop ends the child now, as its test's cleanup would.
func (c *Child) Stop() { c.stop() }

// Kill ends the child with SIGKILL, as a crash would, and waits for it.
func (c *Child) Kill() {
	c.mu.Lock()
	if c.exited {
		c.mu.Unlock()
		return
	}
	c.exited = true
	c.mu.Unlock()
	c.cmd.Process.Kill()
	c.readWG.Wait()
	c.cmd.Wait()
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// VerifyNoLeaks checks, after every other cleanup of tb has run (children
// stopped, LANs removed), that tb leaked no goroutines. Call it first.
func VerifyNoLeaks(tb testing.TB) {
	opt := goleak.IgnoreCurrent()
	tb.Cleanup(func() { goleak.VerifyNone(tb, opt) })
}

// Percentiles returns the p50 and p99 of ds (which it sorts), for
// benchmarks that report latency distributions.
func Percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	slices.Sort(ds)
	at := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	return at(0.50), at(0.99)
}
