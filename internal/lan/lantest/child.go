package lantest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"

	"go.uber.org/goleak"
)

// Handler answers one request in a child. Requests are handled one at a
// time, in order, on the child's main goroutine; a handler that must not
// block later requests starts its own goroutine and reports through Emit.
// When the parent closes stdin the handler is called once more with op
// "close" (which it must treat as idempotent) before the child exits.
type Handler func(ctx context.Context, op string, args json.RawMessage) (any, error)

// Mode returns the mode Spawn gave this process, or "" if it is not a
// child.
func Mode() string { return os.Getenv(childEnv) }

var (
	outMu    sync.Mutex // serializes lines on stdout
	leakBase goleak.Option
)

// Emit sends v to the parent as an event. Safe for concurrent use.
func Emit(v any) {
	write(struct {
		Event any `json:"event"`
	}{v})
}

func write(v any) {
	line, err := json.Marshal(v)
	if err != nil {
		line, _ = json.Marshal(reply{Error: fmt.Sprintf("lantest: unencodable line: %v", err)})
	}
	outMu.Lock()
	defer outMu.Unlock()
	os.Stdout.Write(append(line, '\n'))
}

// Serve runs this process as a child until its stdin closes, then exits
// it. It never returns.
func Serve(h Handler) {
	leakBase = goleak.IgnoreCurrent()
	ctx, cancel := context.WithCancel(context.Background())
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	for sc.Scan() {
		var req struct {
			ID   int             `json:"id"`
			Op   string          `json:"op"`
			Args json.RawMessage `json:"args"`
		}
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			fmt.Fprintf(os.Stderr, "lantest: bad request line: %v\n", err)
			os.Exit(2)
		}
		res, err := h(ctx, req.Op, req.Args)
		rp := struct {
			ID     int    `json:"id"`
			Result any    `json:"result,omitempty"`
			Error  string `json:"error,omitempty"`
		}{ID: req.ID, Result: res}
		if err != nil {
			rp.Result, rp.Error = nil, err.Error()
		}
		write(rp)
	}
	cancel()
	if _, err := h(context.Background(), "close", nil); err != nil {
		fmt.Fprintf(os.Stderr, "lantest: close: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Leaks reports goroutines that started after Serve and are still
// running, as goleak sees them; nil if there are none. Children call it
// after shutting down what they started, so that every test that runs
// hosts in a namespace checks for leaks where the hosts ran.
func Leaks(opts ...goleak.Option) error {
	if leakBase == nil {
		return fmt.Errorf("lantest: Leaks called outside Serve")
	}
	return goleak.Find(append(opts, leakBase)...)
}
