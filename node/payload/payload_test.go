package payload

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// layoutHex is a text payload written out by hand from the layout in the
// package doc: version, id, type, time, body.
const layoutHex = "01" + // version
	"000102030405060708090a0b0c0d0e0f" + // id
	"01" + // type text
	"0000018c7a3f2e00" + // time: 1702300000768 ms
	"68656c6c6f" // "hello"

func TestLayout(t *testing.T) {
	b, _ := hex.DecodeString(layoutHex)
	p, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	want := Payload{
		ID:   ID{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
		Type: TypeText,
		Time: time.UnixMilli(0x18c7a3f2e00),
		Body: []byte("hello"),
	}
	if p.ID != want.ID || p.Type != want.Type || !p.Time.Equal(want.Time) || p.Text() != "hello" {
		t.Fatalf("Parse = %+v, want %+v", p, want)
	}
	out, err := want.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, b) {
		t.Fatalf("Marshal = %x, want %x", out, b)
	}
}

func TestRoundTrip(t *testing.T) {
	now := time.Date(2026, 7, 1, 12, 30, 0, 123_456_789, time.UTC)
	ids := []ID{NewID(), NewID(), NewID()}
	for _, p := range []Payload{
		NewText("hi", now),
		NewText(strings.Repeat("ü", MaxBodySize/2), now),
		NewReceipt(ids[:1], now),
		NewReceipt(ids, now),
		{ID: NewID(), Type: 0x7f, Time: now, Body: nil},
		{ID: NewID(), Type: 0xff, Time: time.UnixMilli(0), Body: []byte{0, 1, 2}},
	} {
		b, err := p.Marshal()
		if err != nil {
			t.Fatalf("%v: %v", p.Type, err)
		}
		if len(b) != HeaderSize+len(p.Body) {
			t.Fatalf("%v: %d bytes for a %d-byte body", p.Type, len(b), len(p.Body))
		}
		q, err := Parse(b)
		if err != nil {
			t.Fatalf("%v: %v", p.Type, err)
		}
		if q.ID != p.ID || q.Type != p.Type || !bytes.Equal(q.Body, p.Body) {
			t.Fatalf("round trip: got %+v, want %+v", q, p)
		}
		if !q.Time.Equal(p.Time.Truncate(time.Millisecond)) {
			t.Fatalf("time %v, want %v", q.Time, p.Time.Truncate(time.Millisecond))
		}
		if q.Type.Known() != (p.Type == TypeText || p.Type == TypeReceipt) {
			t.Fatalf("%v.Known() = %v", q.Type, q.Type.Known())
		}
	}
}

func TestAccessors(t *testing.T) {
	now := time.Now()
	ids := []ID{NewID(), NewID()}
	r := NewReceipt(ids, now)
	got := r.ReceiptIDs()
	if len(got) != 2 || got[0] != ids[0] || got[1] != ids[1] {
		t.Fatalf("ReceiptIDs = %v, want %v", got, ids)
	}
	if r.Text() != "" {
		t.Fatal("Text of a receipt is not empty")
	}
	txt := NewText("hello", now)
	if txt.ReceiptIDs() != nil || txt.Text() != "hello" {
		t.Fatal("text accessors wrong")
	}
	if a, b := NewID(), NewID(); a == b || a.IsZero() {
		t.Fatal("NewID repeats or is zero")
	}
	id := NewID()
	back, err := ParseID(id.String())
	if err != nil || back != id || len(id.String()) != 32 {
		t.Fatalf("ParseID(String) = %v, %v", back, err)
	}
	for _, s := range []string{"", "00", strings.Repeat("zz", 16), strings.Repeat("00", 17)} {
		if _, err := ParseID(s); err == nil {
			t.Errorf("ParseID(%q) accepted", s)
		}
	}
	if TypeText.String() != "text" || TypeReceipt.String() != "receipt" || Type(9).String() != "type(0x09)" {
		t.Fatal("Type.String")
	}
}

func TestParseRejects(t *testing.T) {
	good, _ := hex.DecodeString(layoutHex)
	with := func(at int, v ...byte) []byte {
		b := bytes.Clone(good)
		copy(b[at:], v)
		return b
	}
	header := good[:HeaderSize]
	receipt := func(body []byte) []byte { return append(with(17, 0x02)[:HeaderSize], body...) }
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"version 0", with(0, 0x00), ErrVersion},
		{"version 2", with(0, 0x02), ErrVersion},
		{"lone unknown version", []byte{0x02}, ErrVersion},
		{"type 0", with(17, 0x00), ErrType},
		{"time top bit", with(18, 0x80), ErrTime},
		{"empty text", header, ErrBody},
		{"text not UTF-8", append(bytes.Clone(header), 0xff, 0xfe), ErrBody},
		{"text too large", append(bytes.Clone(header), bytes.Repeat([]byte("a"), MaxBodySize+1)...), ErrTooLarge},
		{"empty receipt", receipt(nil), ErrBody},
		{"receipt partial id", receipt(make([]byte, 17)), ErrBody},
		{"receipt too many ids", receipt(make([]byte, IDSize*(MaxReceiptIDs+1))), ErrBody},
		{"unknown type too large", append(with(17, 0x09)[:HeaderSize], make([]byte, MaxBodySize+1)...), ErrTooLarge},
	}
	for n := 1; n < HeaderSize; n++ {
		tests = append(tests, struct {
			name string
			b    []byte
			want error
		}{fmt.Sprintf("short %d", n), good[:n], ErrShort})
	}
	for _, tc := range tests {
		if _, err := Parse(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s (%d bytes): err = %v, want %v", tc.name, len(tc.b), err, tc.want)
		}
	}
	// The largest valid payloads are accepted.
	if _, err := Parse(append(bytes.Clone(header), bytes.Repeat([]byte("a"), MaxBodySize)...)); err != nil {
		t.Errorf("text of MaxBodySize: %v", err)
	}
	if _, err := Parse(receipt(make([]byte, IDSize*MaxReceiptIDs))); err != nil {
		t.Errorf("receipt of MaxReceiptIDs: %v", err)
	}
}

func TestMarshalRejects(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name string
		p    Payload
		want error
	}{
		{"type 0", Payload{Type: 0, Time: now, Body: []byte("x")}, ErrType},
		{"before 1970", Payload{Type: TypeText, Time: time.Unix(-1, 0), Body: []byte("x")}, ErrTime},
		{"zero time", Payload{Type: TypeText, Body: []byte("x")}, ErrTime},
		{"empty text", NewText("", now), ErrBody},
		{"bad UTF-8", NewText("\xff", now), ErrBody},
		{"empty receipt", NewReceipt(nil, now), ErrBody},
		{"too large", Payload{Type: 0x33, Time: now, Body: make([]byte, MaxBodySize+1)}, ErrTooLarge},
	}
	for _, tc := range tests {
		if _, err := tc.p.Marshal(); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestParseCopiesBody(t *testing.T) {
	b, _ := hex.DecodeString(layoutHex)
	p, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	b[HeaderSize] = 'j'
	if p.Text() != "hello" {
		t.Fatal("Parse aliases its input")
	}
}

// FuzzParse: Parse never panics, and whatever it accepts re-encodes to the
// same bytes (the encoding is canonical).
func FuzzParse(f *testing.F) {
	now := time.UnixMilli(1_780_000_000_000)
	layout, _ := hex.DecodeString(layoutHex)
	f.Add(layout)
	for _, p := range []Payload{
		NewText("hello, world", now),
		NewText("grüße 👋", now),
		NewReceipt([]ID{NewID(), NewID()}, now),
		{ID: NewID(), Type: 0x42, Time: now, Body: []byte("from the future")},
	} {
		b, err := p.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{Version})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			return
		}
		out, err := p.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed payload: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("not canonical:\n in  %x\n out %x", b, out)
		}
		if p.Type == TypeReceipt && len(p.ReceiptIDs()) == 0 {
			t.Fatal("accepted receipt has no ids")
		}
	})
}
