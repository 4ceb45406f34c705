package client

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"time"
)

// errTooLarge is returned when one line or one event's data exceeds the
// parser's limit.
var errTooLarge = errors.New("client: event stream line or event too large")

// sseEvent is one dispatched event.
type sseEvent struct {
	ID   string
	Type string
	Data []byte
}

// sseParser reads a text/event-stream as the WHATWG HTML standard's "event
// stream interpretation" describes: a leading UTF-8 BOM is dropped; lines end
// in CRLF, LF or a lone CR; a blank line dispatches the event being built
// when it has data; a line starting with ":" is a comment; a field's value
// loses one leading space; "data" appends the value and "\n"; "event" sets
// the type; "id" without NUL sets the last event id, which persists across
// events; "retry" with only ASCII digits sets the reconnection time; other
// fields are ignored. At the end of the stream, an event not yet dispatched
// is discarded.
//
// A lone CR ends its line as soon as it is read: the parser never waits for
// the next byte to decide, so an event is dispatched as soon as its blank line
// has arrived.
type sseParser struct {
	br    *bufio.Reader
	limit int

	first  bool // no line read yet (BOM check)
	skipLF bool // the previous line ended in CR: a leading LF belongs to it
	line   []byte

	data   []byte
	typ    string
	lastID string

	retry    time.Duration
	retrySet bool
}

// newSSEParser reads from r with lastID as the initial last event id.
// limit bounds one line and one event's data; <= 0 means MaxEventSize.
func newSSEParser(r io.Reader, lastID string, limit int) *sseParser {
	if limit <= 0 {
		limit = MaxEventSize
	}
	return &sseParser{br: bufio.NewReaderSize(r, 32<<10), limit: limit, first: true, lastID: lastID}
}

// Retry returns the last reconnection time the stream set, and whether it
// set one.
func (p *sseParser) Retry() (time.Duration, bool) { return p.retry, p.retrySet }

// LastID returns the last event id string: the id of the last dispatched
// event, or a later one set by an id-only block.
func (p *sseParser) LastID() string { return p.lastID }

// Next returns the next event. At the end of the stream it returns io.EOF
// (any event under construction is dropped); a read error is returned as is.
func (p *sseParser) Next() (sseEvent, error) {
	for {
		line, err := p.readLine()
		if err != nil {
			return sseEvent{}, err
		}
		if p.first {
			p.first = false
			line = bytes.TrimPrefix(line, []byte("\xEF\xBB\xBF"))
		}
		if len(line) == 0 {
			if ev, ok := p.dispatch(); ok {
				return ev, nil
			}
			continue
		}
		if err := p.field(line); err != nil {
			return sseEvent{}, err
		}
	}
}

// dispatch ends the event being built.
func (p *sseParser) dispatch() (sseEvent, bool) {
	if len(p.data) == 0 {
		p.typ = ""
		return sseEvent{}, false
	}
	ev := sseEvent{ID: p.lastID, Type: p.typ, Data: bytes.Clone(p.data[:len(p.data)-1])}
	if ev.Type == "" {
		ev.Type = "message"
	}
	p.data = p.data[:0]
	p.typ = ""
	return ev, true
}

// field processes one non-blank line.
func (p *sseParser) field(line []byte) error {
	if line[0] == ':' {
		return nil
	}
	name, value := line, []byte(nil)
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		name, value = line[:i], line[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(name) {
	case "event":
		p.typ = string(value)
	case "data":
		if len(p.data)+len(value)+1 > p.limit {
			return errTooLarge
		}
		p.data = append(p.data, value...)
		p.data = append(p.data, '\n')
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			p.lastID = string(value)
		}
	case "retry":
		if len(value) == 0 {
			return nil
		}
		const maxMS = int64(24 * time.Hour / time.Millisecond)
		var n int64
		for _, c := range value {
			if c < '0' || c > '9' {
				return nil
			}
			if n <= maxMS { // past it the value is capped anyway
				n = n*10 + int64(c-'0')
			}
		}
		p.retry = time.Duration(min(n, maxMS)) * time.Millisecond
		p.retrySet = true
	}
	return nil
}

// readLine returns the next line without its terminator. The slice is valid
// until the next call. A line not terminated when the stream ends is dropped
// (it could only belong to an event that is never dispatched).
func (p *sseParser) readLine() ([]byte, error) {
	p.line = p.line[:0]
	for {
		if p.br.Buffered() == 0 {
			if _, err := p.br.Peek(1); err != nil {
				return nil, err
			}
		}
		buf, _ := p.br.Peek(p.br.Buffered())
		if p.skipLF {
			p.skipLF = false
			if buf[0] == '\n' {
				_, _ = p.br.Discard(1)
				continue
			}
		}
		i := bytes.IndexAny(buf, "\r\n")
		if i < 0 {
			if len(p.line)+len(buf) > p.limit {
				return nil, errTooLarge
			}
			p.line = append(p.line, buf...)
			_, _ = p.br.Discard(len(buf))
			continue
		}
		if len(p.line)+i > p.limit {
			return nil, errTooLarge
		}
		p.line = append(p.line, buf[:i]...)
		p.skipLF = buf[i] == '\r'
		_, _ = p.br.Discard(i + 1)
		return p.line, nil
	}
}
