package events

import (
	"encoding/json"
	"strings"
)

// An announcement that carries its event spares every follower a read of
// the stream: streamed text is most of a job's events, and a read per
// follower per batch was the largest cost of serving them. The message is
//
//	<job id> LF <previous entry id> LF <entry id> LF <type> LF <data>
//
// where the previous entry id is the stream's last entry before this one
// (empty when there was none): a follower that has delivered exactly that
// entry can deliver this one as it is; any other follower reads the stream.
// A message without LF is a bare job id (the event is only on the stream).

// Announced is an event an announcement carried, with the id of the entry
// before it on its stream.
type Announced struct {
	Prev  string
	Event Event
}

// ParseAnnouncement splits a Channel message into the job id and, when the
// message carries one, the announced event (nil otherwise, and for a
// malformed message: its stream is then read, so nothing is lost).
func ParseAnnouncement(msg string) (string, *Announced) {
	id, rest, ok := strings.Cut(msg, "\n")
	if !ok {
		return msg, nil
	}
	parts := strings.SplitN(rest, "\n", 4)
	if len(parts) != 4 || !ValidID(parts[1]) || (parts[0] != "" && !ValidID(parts[0])) || parts[2] == "" {
		return id, nil
	}
	data := parts[3]
	if data == "" {
		data = "{}"
	}
	return id, &Announced{Prev: parts[0], Event: Event{ID: parts[1], Type: parts[2], Data: json.RawMessage(data)}}
}
