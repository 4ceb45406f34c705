package client

import (
	"encoding/json"
	"testing"
)

func nev(name, data string) Event { return Event{Name: name, Data: json.RawMessage(data)} }

func TestNarrative(t *testing.T) {
	tests := []struct {
		name string
		evs  []Event
		want string
	}{
		{"none", nil, ""},
		{"deltas", []Event{nev(EventNarrativeDelta, `{"text":"a "}`), nev(EventNarrativeDelta, `{"text":"b"}`)}, "a b"},
		{"restart drops the dead attempt's text", []Event{
			nev(EventAggregateStarted, `{"attempt":1}`), nev(EventNarrativeDelta, `{"text":"dead "}`),
			nev(EventAggregateStarted, `{"attempt":2}`), nev(EventNarrativeDelta, `{"text":"alive"}`),
		}, "alive"},
		{"completed wins", []Event{nev(EventNarrativeDelta, `{"text":"par"}`), nev(EventNarrativeCompleted, `{"text":"partial text"}`)}, "partial text"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Narrative(tt.evs); got != tt.want {
				t.Fatalf("Narrative = %q, want %q", got, tt.want)
			}
		})
	}
}
