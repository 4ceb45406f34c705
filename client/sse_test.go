package client

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

type parsed struct {
	events   []sseEvent
	lastID   string
	retry    time.Duration
	retrySet bool
	err      error
}

// parseAll runs the streaming parser over r until it stops.
func parseAll(r io.Reader, limit int) parsed {
	p := newSSEParser(r, "", limit)
	var out parsed
	for {
		ev, err := p.Next()
		if err != nil {
			if err != io.EOF {
				out.err = err
			}
			break
		}
		out.events = append(out.events, ev)
	}
	out.lastID = p.LastID()
	out.retry, out.retrySet = p.Retry()
	return out
}

// chunkReader returns the input in pieces of the given sizes, cycling.
type chunkReader struct {
	b     []byte
	sizes []int
	i     int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := 1
	if len(r.sizes) > 0 {
		n = max(r.sizes[r.i%len(r.sizes)], 1)
		r.i++
	}
	n = min(n, len(p), len(r.b))
	copy(p, r.b[:n])
	r.b = r.b[n:]
	return n, nil
}

func ev(id, typ, data string) sseEvent { return sseEvent{ID: id, Type: typ, Data: []byte(data)} }

func TestParser(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		want     []sseEvent
		lastID   string
		retry    time.Duration
		retrySet bool
	}{
		{name: "one event", in: "id: 1-0\nevent: job.accepted\ndata: {\"a\":1}\n\n",
			want: []sseEvent{ev("1-0", "job.accepted", `{"a":1}`)}, lastID: "1-0"},
		{name: "multi-line data joined with LF", in: "data: a\ndata: b\ndata:\ndata: c\n\n",
			want: []sseEvent{ev("", "message", "a\nb\n\nc")}},
		{name: "comments and heartbeats are skipped", in: ": ping\n\n:\n\nid: 1\n: ping\ndata: x\n\n: ping\n\n",
			want: []sseEvent{ev("1", "message", "x")}, lastID: "1"},
		{name: "retry sets reconnection time", in: "retry: 2000\n\ndata: x\n\n",
			want: []sseEvent{ev("", "message", "x")}, retry: 2 * time.Second, retrySet: true},
		{name: "retry with non-digits is ignored", in: "retry: 2000\nretry: 1x\nretry: -5\nretry:\nretry: 1.5\n\n",
			retry: 2 * time.Second, retrySet: true},
		{name: "retry zero", in: "retry: 0\n\n", retry: 0, retrySet: true},
		{name: "huge retry is capped", in: "retry: 99999999999999999999999999\n\n", retry: 24 * time.Hour, retrySet: true},
		{name: "CRLF line ends", in: "id: 7\r\nevent: e\r\ndata: a\r\ndata: b\r\n\r\n",
			want: []sseEvent{ev("7", "e", "a\nb")}, lastID: "7"},
		{name: "lone CR line ends", in: "id: 7\revent: e\rdata: a\r\rdata: b\r\r",
			want: []sseEvent{ev("7", "e", "a"), ev("7", "message", "b")}, lastID: "7"},
		{name: "mixed line ends", in: "data: a\r\n\ndata: b\n\r\ndata: c\r\r\n\n",
			want: []sseEvent{ev("", "message", "a"), ev("", "message", "b"), ev("", "message", "c")}},
		{name: "id persists across events", in: "id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\n",
			want: []sseEvent{ev("1", "message", "a"), ev("1", "message", "b"), ev("2", "message", "c")}, lastID: "2"},
		{name: "empty id resets", in: "id: 1\ndata: a\n\nid\ndata: b\n\nid:\n\n",
			want: []sseEvent{ev("1", "message", "a"), ev("", "message", "b")}},
		{name: "id with NUL is ignored", in: "id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
			want: []sseEvent{ev("1", "message", "a"), ev("1", "message", "b")}, lastID: "1"},
		{name: "id-only block updates last id without dispatch", in: "id: 5\n\n", lastID: "5"},
		{name: "no event field defaults to message", in: "data: x\n\n",
			want: []sseEvent{ev("", "message", "x")}},
		{name: "event without data is not dispatched and its type is reset", in: "event: x\n\ndata: y\n\n",
			want: []sseEvent{ev("", "message", "y")}},
		{name: "only first space is stripped", in: "data:x\n\ndata:  y\n\n",
			want: []sseEvent{ev("", "message", "x"), ev("", "message", " y")}},
		{name: "field without colon has empty value", in: "data\n\ndata\ndata\n\n",
			want: []sseEvent{ev("", "message", ""), ev("", "message", "\n")}},
		{name: "value may contain colons", in: "data: a: b:c\n\n",
			want: []sseEvent{ev("", "message", "a: b:c")}},
		{name: "unknown fields are ignored", in: "foo: bar\nData: no\ndata: yes\n\n",
			want: []sseEvent{ev("", "message", "yes")}},
		{name: "leading BOM is dropped", in: "\xEF\xBB\xBFdata: x\n\n",
			want: []sseEvent{ev("", "message", "x")}},
		{name: "only one leading BOM is dropped", in: "\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\ndata: y\n\n",
			want: []sseEvent{ev("", "message", "y")}},
		{name: "unfinished event at EOF is discarded", in: "data: a\n\ndata: b\n",
			want: []sseEvent{ev("", "message", "a")}},
		{name: "unterminated line at EOF is discarded", in: "data: a\n\ndata: b",
			want: []sseEvent{ev("", "message", "a")}},
		{name: "empty stream", in: ""},
		{name: "last event type applies", in: "event: a\nevent: b\ndata: x\n\n",
			want: []sseEvent{ev("", "b", "x")}},
		{name: "UTF-8 data", in: "data: {\"text\":\"日本語 ✓\"}\n\n",
			want: []sseEvent{ev("", "message", "{\"text\":\"日本語 ✓\"}")}},
	}
	readers := map[string]func(string) io.Reader{
		"whole":    func(s string) io.Reader { return strings.NewReader(s) },
		"one byte": func(s string) io.Reader { return iotest.OneByteReader(strings.NewReader(s)) },
		"odd":      func(s string) io.Reader { return &chunkReader{b: []byte(s), sizes: []int{3, 1, 2, 7}} },
	}
	for _, tt := range tests {
		for rname, mk := range readers {
			t.Run(tt.name+"/"+rname, func(t *testing.T) {
				got := parseAll(mk(tt.in), 0)
				if got.err != nil {
					t.Fatalf("error: %v", got.err)
				}
				if !eventsEqual(got.events, tt.want) {
					t.Errorf("events:\n got %q\nwant %q", got.events, tt.want)
				}
				if got.lastID != tt.lastID {
					t.Errorf("last id %q, want %q", got.lastID, tt.lastID)
				}
				if got.retry != tt.retry || got.retrySet != tt.retrySet {
					t.Errorf("retry %v (set %v), want %v (set %v)", got.retry, got.retrySet, tt.retry, tt.retrySet)
				}
			})
		}
	}
}

func eventsEqual(a, b []sseEvent) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID || a[i].Type != b[i].Type || !bytes.Equal(a[i].Data, b[i].Data) {
			return false
		}
	}
	return true
}

// TestParserDispatchesWithoutLookahead checks that an event is handed over as
// soon as its blank line has arrived, even when that line ends in a lone CR
// and nothing follows yet.
func TestParserDispatchesWithoutLookahead(t *testing.T) {
	for _, in := range []string{"data: a\n\n", "data: a\r\r", "data: a\r\n\r\n"} {
		pr, pw := io.Pipe()
		p := newSSEParser(pr, "", 0)
		go func() { _, _ = pw.Write([]byte(in)) }() // then blocks no further: the pipe stays open
		got, err := p.Next()
		if err != nil || string(got.Data) != "a" {
			t.Errorf("%q: got %q, %v", in, got.Data, err)
		}
		pw.Close()
	}
}

func TestParserLimit(t *testing.T) {
	long := strings.Repeat("x", 100)
	for _, in := range []string{
		"data: " + long + "\n\n",                          // one long line
		strings.Repeat("data: "+long[:30]+"\n", 5) + "\n", // many lines, one big event
	} {
		got := parseAll(iotest.OneByteReader(strings.NewReader(in)), 64)
		if !errors.Is(got.err, errTooLarge) {
			t.Errorf("%.20q…: err %v, want errTooLarge", in, got.err)
		}
	}
	// Within the limit, fine.
	if got := parseAll(strings.NewReader("data: "+long[:50]+"\n\n"), 64); got.err != nil || len(got.events) != 1 {
		t.Errorf("within limit: %v, %d events", got.err, len(got.events))
	}
}

func TestParserReadError(t *testing.T) {
	boom := errors.New("boom")
	r := io.MultiReader(strings.NewReader("data: a\n\ndata: b\n"), iotest.ErrReader(boom))
	got := parseAll(r, 0)
	if !errors.Is(got.err, boom) || len(got.events) != 1 {
		t.Fatalf("got %d events, err %v", len(got.events), got.err)
	}
}

// referenceParse is a direct, non-streaming transcription of the WHATWG
// algorithm over the whole input, used as an oracle.
func referenceParse(in string) parsed {
	in = strings.TrimPrefix(in, "\xEF\xBB\xBF")
	lines := regexp.MustCompile("\r\n|\r|\n").Split(in, -1)
	lines = lines[:len(lines)-1] // the text after the last line end is not a line
	var out parsed
	var data strings.Builder
	typ := ""
	for _, line := range lines {
		switch {
		case line == "":
			if data.Len() == 0 {
				typ = ""
				continue
			}
			d := strings.TrimSuffix(data.String(), "\n")
			t := typ
			if t == "" {
				t = "message"
			}
			out.events = append(out.events, sseEvent{ID: out.lastID, Type: t, Data: []byte(d)})
			data.Reset()
			typ = ""
			continue
		case strings.HasPrefix(line, ":"):
			continue
		}
		name, value, found := strings.Cut(line, ":")
		if found {
			value = strings.TrimPrefix(value, " ")
		}
		switch name {
		case "event":
			typ = value
		case "data":
			data.WriteString(value + "\n")
		case "id":
			if !strings.ContainsRune(value, 0) {
				out.lastID = value
			}
		case "retry":
			if regexp.MustCompile(`^[0-9]+$`).MatchString(value) {
				ms := int64(0)
				for _, c := range value {
					if ms > 1e12 {
						break
					}
					ms = ms*10 + int64(c-'0')
				}
				out.retry = time.Duration(min(ms, int64(24*time.Hour/time.Millisecond))) * time.Millisecond
				out.retrySet = true
			}
		}
	}
	return out
}

func FuzzParser(f *testing.F) {
	for _, s := range []string{
		"id: 1\nevent: e\ndata: {}\n\n",
		"data: a\r\ndata: b\r\n\r\n",
		"data: a\rdata: b\r\r",
		": ping\n\nretry: 10\n\n",
		"\xEF\xBB\xBFid: 1\x00\ndata\n\n",
		"id: 1\ndata: a\n\ndata: b\n",
		"event: x\n\ndata: y\n\n",
	} {
		f.Add(s, uint8(3))
	}
	f.Fuzz(func(t *testing.T, in string, chunk uint8) {
		want := referenceParse(in)
		for _, r := range []io.Reader{
			strings.NewReader(in),
			&chunkReader{b: []byte(in), sizes: []int{int(chunk%16) + 1, 1}},
		} {
			got := parseAll(r, 1<<20)
			if got.err != nil {
				t.Fatalf("error: %v", got.err)
			}
			if !eventsEqual(got.events, want.events) {
				t.Fatalf("events:\n got %q\nwant %q", got.events, want.events)
			}
			if got.lastID != want.lastID || got.retry != want.retry || got.retrySet != want.retrySet {
				t.Fatalf("state: got (%q, %v, %v), want (%q, %v, %v)", got.lastID, got.retry, got.retrySet, want.lastID, want.retry, want.retrySet)
			}
		}
	})
}

func TestReferenceParserAgrees(t *testing.T) {
	// The oracle itself must accept the table's basic case.
	got := referenceParse("id: 1\ndata: a\ndata: b\n\n")
	want := []sseEvent{ev("1", "message", "a\nb")}
	if !reflect.DeepEqual(got.events, want) {
		t.Fatalf("reference: %q", got.events)
	}
}
