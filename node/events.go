package node

import (
	"encoding/json"
	"sync"
	"time"
)

// Event is something the node reports, in order, through Config.OnEvent.
// Each type marshals to one JSON object whose "type" field names it; that
// JSON is the `qpq chat --json` output (docs/CLI.md). Fields may be added,
// never renamed.
type Event interface {
	// Type is the event's "type" in JSON.
	Type() string
}

// Ready: the node can be used — identity loaded, P2P up, and, with a home
// server, logged in with KeyPackages and hybrid key uploaded. Once.
type Ready struct {
	User     string `json:"user"`
	Identity string `json:"identity"` // hex of the Ed25519 identity key
	PeerID   string `json:"peer_id"`
}

// Peer: a peer's link changed, or /mesh peers lists it.
type Peer struct {
	User     string `json:"user"`
	Identity string `json:"identity"`
	// Link is "seen" (on the LAN, not linked), "direct", "relayed" or
	// "down".
	Link string `json:"link"`
}

// Conversation: a conversation was joined, created or changed, or /list
// or /members shows it.
type Conversation struct {
	Name    string   `json:"name"`
	Members []string `json:"members"`
	// MemberIDs are the members' identity keys (hex), in the same order.
	MemberIDs []string `json:"member_ids"`
	Epoch     uint64   `json:"epoch"`
	Kind      string   `json:"kind"`   // "dm" or "group"
	Status    string   `json:"status"` // "active", "waiting", "left", "removed"
	ID        string   `json:"id"`     // hex of the MLS group id
	Current   bool     `json:"current,omitempty"`
}

// Message: a message arrived (each once, whichever path brought it).
type Message struct {
	Conversation string    `json:"conversation"`
	From         string    `json:"from"`
	ID           string    `json:"id"` // 32 hex digits
	Text         string    `json:"text"`
	Via          string    `json:"via"`  // "direct" or "server"
	Time         time.Time `json:"time"` // the sender's clock
}

// Sent: a message was accepted by the peer's node (via "direct") or
// durably by its home server (via "server"); one per recipient.
type Sent struct {
	Conversation string `json:"conversation"`
	ID           string `json:"id"`
	Via          string `json:"via"`
	To           string `json:"to"`
}

// Delivery: what this node sends to a recipient is held up — no path
// reaches them now, and it is kept until one does (State "waiting", with
// the error's Code and Message) — or gets through again (State "resumed",
// with Via). One event per change, per recipient. Conversation is where
// the held-up (or first resumed) item belongs.
type Delivery struct {
	To           string `json:"to"`
	Identity     string `json:"identity"`
	Conversation string `json:"conversation"`
	State        string `json:"state"`
	Via          string `json:"via,omitempty"`
	Code         string `json:"code,omitempty"`
	Message      string `json:"message,omitempty"`
}

// Delivery states.
const (
	DeliveryWaiting = "waiting"
	DeliveryResumed = "resumed"
)

// History: one stored message, oldest first, answering /history.
type History struct {
	Conversation string    `json:"conversation"`
	From         string    `json:"from"`
	ID           string    `json:"id"`
	Text         string    `json:"text"`
	Via          string    `json:"via"` // "direct", "server" or "sent" (this node's own)
	Time         time.Time `json:"time"`
	// WaitingFor names the recipients one of this node's own messages
	// has not reached yet (it is still in the outbox).
	WaitingFor []string `json:"waiting_for,omitempty"`
}

// Error: a command failed, or something went wrong that the user should
// know. Code is one of rpc/errcode's codes.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Command is set when the error answers a command (its name, as
	// in the done event).
	Command string `json:"command,omitempty"`
}

// Pin: the home server's certificate fingerprint, pinned now (First) or
// checked against the pin.
type Pin struct {
	Server      string `json:"server"`
	Fingerprint string `json:"fingerprint"`
	First       bool   `json:"first"`
}

// Server: the home server session came up (logged in) or went down.
type Server struct {
	Server string `json:"server"`
	State  string `json:"state"` // "up" or "down"
}

// Whoami answers /whoami.
type Whoami struct {
	User        string   `json:"user"`
	Identity    string   `json:"identity"`
	Fingerprint string   `json:"fingerprint"` // short form for people to compare
	PeerID      string   `json:"peer_id"`
	Addrs       []string `json:"addrs"`
	Server      string   `json:"server,omitempty"`
}

func (Ready) Type() string        { return "ready" }
func (Peer) Type() string         { return "peer" }
func (Conversation) Type() string { return "conversation" }
func (Message) Type() string      { return "message" }
func (Sent) Type() string         { return "sent" }
func (Delivery) Type() string     { return "delivery" }
func (History) Type() string      { return "history" }
func (Error) Type() string        { return "error" }
func (Pin) Type() string          { return "pin" }
func (Server) Type() string       { return "server" }
func (Whoami) Type() string       { return "whoami" }

// MarshalEvent returns ev as one JSON object with its "type" first.
func MarshalEvent(ev Event) ([]byte, error) {
	body, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	typ, _ := json.Marshal(ev.Type())
	out := append([]byte(`{"type":`), typ...)
	if len(body) > 2 { // not "{}"
		out = append(out, ',')
		out = append(out, body[1:]...)
		return out, nil
	}
	return append(out, '}'), nil
}

// eventQueue hands events to OnEvent on one goroutine, in order, without
// ever blocking the part of the node that reports them.
type eventQueue struct {
	deliver func(Event)
	done    chan struct{}

	mu     sync.Mutex // guards the fields below
	cond   *sync.Cond
	items  []Event
	closed bool
}

func newEventQueue(deliver func(Event)) *eventQueue {
	q := &eventQueue{deliver: deliver, done: make(chan struct{})}
	q.cond = sync.NewCond(&q.mu)
	go q.run()
	return q
}

func (q *eventQueue) push(ev Event) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.items = append(q.items, ev)
	q.cond.Signal()
}

func (q *eventQueue) run() {
	defer close(q.done)
	for {
		q.mu.Lock()
		for len(q.items) == 0 && !q.closed {
			q.cond.Wait()
		}
		items := q.items
		q.items = nil
		closed := q.closed
		q.mu.Unlock()
		for _, ev := range items {
			q.deliver(ev)
		}
		if closed {
			return
		}
	}
}

// close delivers what is queued, then stops.
func (q *eventQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Signal()
	q.mu.Unlock()
	<-q.done
}
