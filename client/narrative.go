package client

// Narrative returns the narrative text a job's events carry so far: the
// text of the narrative.delta events after the latest aggregate.started
// (an aggregation that restarts, because the attempt before it died,
// announces itself so, and the text before it is void). Once the stream
// holds narrative.completed, its text is the answer.
func Narrative(evs []Event) string {
	text := ""
	for _, ev := range evs {
		switch ev.Name {
		case EventAggregateStarted:
			text = ""
		case EventNarrativeDelta:
			var d TextData
			if ev.Decode(&d) == nil {
				text += d.Text
			}
		case EventNarrativeCompleted:
			var d TextData
			if ev.Decode(&d) == nil {
				text = d.Text
			}
		}
	}
	return text
}
