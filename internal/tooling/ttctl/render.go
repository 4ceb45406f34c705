package ttctl

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/timetravel-ai/timetravel/client"
)

// Renderer turns a job's event stream into text for a terminal or a CI log.
//
// Output is organised in sections. A time-travel job has one per snapshot
// in chronological order, then key changes and the narrative in the order
// they arrive; an ensemble one per model's answer in the request's order,
// then the synthesis and the analysis (consensus, disagreements with each
// model's position, claims only one model made). One section at a time is
// live: its text is written as its deltas arrive, word by word.
// The other sections are buffered and written whole when their turn comes,
// so concurrent snapshots never interleave and every line reads in order.
// Output is plain text without terminal control sequences.
//
// Feed events in stream order to Handle (it has the signature of a
// client.Follow callback), then call Summary with the final job. A Renderer
// is not safe for concurrent use.
type Renderer struct {
	w    io.Writer
	err  error
	secs []*section
	live int

	kind       string
	snaps      map[int]*section
	keyChanges *section
	narrative  *section
	synthesis  *section
	analysis   *section
	final      *client.JobCompletedData
}

// section is one block of output.
type section struct {
	title   string
	pending strings.Builder // text not yet written, while not live
	shown   bool            // header written: the section is or was live
	done    bool
	footer  string
	endNL   bool   // the body written or pending so far ends with a newline
	empty   bool   // no body yet
	text    string // the current attempt's text (snapshots, narrative)
	attempt int
	started bool
}

// NewRenderer returns a Renderer writing to w.
func NewRenderer(w io.Writer) *Renderer {
	return &Renderer{w: w, snaps: make(map[int]*section)}
}

// Final returns the data of the terminal job.completed event, or nil before
// it.
func (r *Renderer) Final() *client.JobCompletedData { return r.final }

func (r *Renderer) write(s string) {
	if r.err == nil && s != "" {
		_, r.err = io.WriteString(r.w, s)
	}
}

func (r *Renderer) printf(format string, a ...any) { r.write(fmt.Sprintf(format, a...)) }

func (r *Renderer) addSection(title string) *section {
	s := &section{title: title, empty: true, endNL: true}
	r.secs = append(r.secs, s)
	return s
}

// emit appends body text to a section: written now when it is live,
// buffered otherwise.
func (r *Renderer) emit(s *section, text string) {
	if text == "" {
		return
	}
	if r.isLive(s) {
		r.write(text)
	} else {
		s.pending.WriteString(text)
	}
	s.empty = false
	s.endNL = strings.HasSuffix(text, "\n")
}

// line emits text as a line of its own.
func (r *Renderer) line(s *section, text string) {
	if !s.endNL {
		text = "\n" + text
	}
	r.emit(s, text+"\n")
}

func (r *Renderer) isLive(s *section) bool {
	return r.live < len(r.secs) && r.secs[r.live] == s && s.shown
}

// finish marks a section done with a footer line and moves on.
func (r *Renderer) finish(s *section, footer string) {
	if s.done {
		return
	}
	s.done = true
	s.footer = footer
	r.advance()
}

// advance writes the live section's header and buffered text, and while the
// live section is done, its footer and the next section's.
func (r *Renderer) advance() {
	for r.live < len(r.secs) {
		s := r.secs[r.live]
		if !s.shown {
			r.printf("\n== %s ==\n", s.title)
			r.write(s.pending.String())
			s.pending.Reset()
			s.shown = true
		}
		if !s.done {
			return
		}
		if !s.endNL {
			r.write("\n")
		}
		if s.footer != "" {
			r.printf("-- %s\n", s.footer)
		}
		r.live++
	}
}

// Handle renders one event. It returns the first write error, or an error if
// a known event's data cannot be decoded. Unknown events are ignored.
func (r *Renderer) Handle(e client.Event) error {
	if err := r.handle(e); err != nil {
		return err
	}
	return r.err
}

func (r *Renderer) handle(e client.Event) error {
	switch e.Name {
	case client.EventJobAccepted:
		var d client.JobAcceptedData
		if err := e.Decode(&d); err != nil {
			return err
		}
		r.accepted(d)
	case client.EventSnapshotStarted:
		var d client.SnapshotStartedData
		if err := e.Decode(&d); err != nil {
			return err
		}
		r.memberStarted(r.snapshot(d.Index, d.Label, d.Date), d.Attempt)
	case client.EventAnswerStarted:
		var d client.AnswerStartedData
		if err := e.Decode(&d); err != nil {
			return err
		}
		r.memberStarted(r.answer(d.Index, d.Label), d.Attempt)
	case client.EventSnapshotDelta, client.EventAnswerDelta:
		var d client.SnapshotDeltaData
		if err := e.Decode(&d); err != nil {
			return err
		}
		var s *section
		if e.Name == client.EventSnapshotDelta {
			s = r.snapshot(d.Index, "", "")
		} else {
			s = r.answer(d.Index, "")
		}
		s.started = true
		s.text += d.Text
		r.emit(s, d.Text)
	case client.EventSnapshotCompleted:
		var d client.SnapshotCompletedData
		if err := e.Decode(&d); err != nil {
			return err
		}
		r.memberCompleted(r.snapshot(d.Index, d.Label, d.Date), d.Text, d.Model, d.DurationMS, d.Cached)
	case client.EventAnswerCompleted:
		var d client.AnswerCompletedData
		if err := e.Decode(&d); err != nil {
			return err
		}
		r.memberCompleted(r.answer(d.Index, d.Label), d.Text, d.Model, d.DurationMS, d.Cached)
	case client.EventSnapshotFailed:
		var d client.SnapshotFailedData
		if err := e.Decode(&d); err != nil {
			return err
		}
		r.finish(r.snapshot(d.Index, d.Label, d.Date), "FAILED: "+d.Error)
	case client.EventAnswerFailed:
		var d client.AnswerFailedData
		if err := e.Decode(&d); err != nil {
			return err
		}
		r.finish(r.answer(d.Index, d.Label), "FAILED: "+d.Error)
	case client.EventSynthesisDelta:
		var d client.TextData
		if err := e.Decode(&d); err != nil {
			return err
		}
		s := r.synthesisSection()
		s.text += d.Text
		r.emit(s, d.Text)
	case client.EventSynthesisCompleted:
		var d client.TextData
		if err := e.Decode(&d); err != nil {
			return err
		}
		s := r.synthesisSection()
		r.complete(s, d.Text)
		r.finish(s, cachedFooter(d.Cached))
	case client.EventSynthesisFailed:
		var d client.FailedData
		if err := e.Decode(&d); err != nil {
			return err
		}
		r.finish(r.synthesisSection(), "FAILED: "+d.Error)
	case client.EventAnalysisCompleted:
		var d client.AnalysisData
		if err := e.Decode(&d); err != nil {
			return err
		}
		r.analysisBody(r.analysisSection(), d.Analysis)
		r.finish(r.analysisSection(), cachedFooter(d.Cached))
	case client.EventAnalysisFailed:
		var d client.FailedData
		if err := e.Decode(&d); err != nil {
			return err
		}
		r.finish(r.analysisSection(), "FAILED: "+d.Error)
	case client.EventKeyChangesCompleted:
		var d client.KeyChangesData
		if err := e.Decode(&d); err != nil {
			return err
		}
		s := r.keyChangesSection()
		if len(d.KeyChanges) == 0 {
			r.line(s, "(none)")
		}
		for _, kc := range d.KeyChanges {
			r.line(s, fmt.Sprintf("%s → %s", orDate(kc.FromLabel, kc.From), orDate(kc.ToLabel, kc.To)))
			if len(kc.Changes) == 0 {
				r.line(s, "  (no change)")
			}
			for _, c := range kc.Changes {
				r.line(s, "  - "+c)
			}
		}
		r.finish(s, "")
	case client.EventKeyChangesFailed:
		var d client.FailedData
		if err := e.Decode(&d); err != nil {
			return err
		}
		r.finish(r.keyChangesSection(), "FAILED: "+d.Error)
	case client.EventAggregateStarted:
		var d client.AggregateStartedData
		if err := e.Decode(&d); err != nil {
			return err
		}
		for _, s := range []*section{r.narrative, r.synthesis} {
			if d.Attempt <= 1 || s == nil || s.done {
				continue
			}
			// The attempt before died: its streamed text is void.
			if r.isLive(s) {
				r.line(s, fmt.Sprintf("[aggregation restarted, attempt %d]", d.Attempt))
			} else {
				s.pending.Reset()
				s.empty, s.endNL = true, true
				r.line(s, fmt.Sprintf("[attempt %d]", d.Attempt))
			}
			s.text = ""
		}
	case client.EventNarrativeDelta:
		var d client.TextData
		if err := e.Decode(&d); err != nil {
			return err
		}
		s := r.narrativeSection()
		s.text += d.Text
		r.emit(s, d.Text)
	case client.EventNarrativeCompleted:
		var d client.TextData
		if err := e.Decode(&d); err != nil {
			return err
		}
		s := r.narrativeSection()
		r.complete(s, d.Text)
		r.finish(s, "")
	case client.EventNarrativeFailed:
		var d client.FailedData
		if err := e.Decode(&d); err != nil {
			return err
		}
		r.finish(r.narrativeSection(), "FAILED: "+d.Error)
	case client.EventJobCompleted:
		var d client.JobCompletedData
		if err := e.Decode(&d); err != nil {
			return err
		}
		r.final = &d
		for _, s := range r.secs {
			switch {
			case s.done:
			case s.empty && !s.started:
				s.done, s.footer = true, "not answered"
			default:
				s.done, s.footer = true, "incomplete"
			}
		}
		r.advance()
		r.printf("\n== Job %s ==\n", d.Status)
		if d.Error != "" {
			r.printf("Error: %s\n", d.Error)
		}
	}
	return nil
}

// complete reconciles the streamed text of s with the final text.
func (r *Renderer) complete(s *section, final string) {
	switch {
	case strings.HasPrefix(final, s.text):
		r.emit(s, final[len(s.text):])
	case r.isLive(s):
		r.line(s, "[final text]")
		r.emit(s, final)
	default:
		s.pending.Reset()
		s.empty, s.endNL = true, true
		r.emit(s, final)
	}
	s.text = final
}

func (r *Renderer) accepted(d client.JobAcceptedData) {
	r.kind = d.Kind
	r.printf("Job %s\n", d.JobID)
	r.printf("Question: %s\n", d.Question)
	var parts []string
	if d.Kind == client.KindEnsemble {
		parts = append(parts, "ensemble of "+strings.Join(d.Models, ", "))
		if d.SynthesisModel != "" {
			parts = append(parts, "synthesis by "+d.SynthesisModel)
		}
	} else {
		if d.Model != "" {
			parts = append(parts, "model "+d.Model)
		}
		if d.Complexity != "" {
			parts = append(parts, d.Complexity)
		}
		parts = append(parts, plural(len(d.TimePoints), "time point"))
	}
	if t, err := time.Parse(time.RFC3339, d.Deadline); err == nil {
		parts = append(parts, "deadline "+t.Local().Format("15:04:05"))
	}
	if d.Cached {
		parts = append(parts, "served from the caches")
	}
	if w := d.ExpectedWaitMS; w != nil && *w >= 1000 && !d.Cached {
		parts = append(parts, fmt.Sprintf("expected wait for the models about %d s", (*w+500)/1000))
	}
	r.printf("%s\n", strings.Join(parts, " · "))
	for _, tp := range d.TimePoints {
		r.snapshot(tp.Index, tp.Label, tp.Date)
	}
	for i, m := range d.Models {
		r.answer(i, m)
	}
	r.advance()
}

// memberStarted notes the start of an attempt at a member (a snapshot or
// an answer); a later attempt replaces the text of the earlier ones.
func (r *Renderer) memberStarted(s *section, attempt int) {
	if s.started && attempt > s.attempt {
		if r.isLive(s) {
			r.line(s, fmt.Sprintf("[attempt %d failed; retrying, attempt %d]", s.attempt, attempt))
		} else {
			s.pending.Reset()
			s.empty, s.endNL = true, true
			r.line(s, fmt.Sprintf("[attempt %d]", attempt))
		}
		s.text = ""
	}
	s.started, s.attempt = true, max(attempt, 1)
}

// memberCompleted ends a member's section with its final text and a footer
// of its duration, the model that answered and whether it was cached.
func (r *Renderer) memberCompleted(s *section, text, model string, durationMS int64, cached bool) {
	r.complete(s, text)
	footer := "done in " + ms(durationMS)
	if cached {
		footer = "from the cache"
	}
	if model != "" {
		footer += " · " + model
	}
	r.finish(s, footer)
}

func cachedFooter(cached bool) string {
	if cached {
		return "from the cache"
	}
	return ""
}

// analysisBody writes an ensemble's analysis: the points of consensus,
// the disagreements with who said what, and the claims only one model
// made.
func (r *Renderer) analysisBody(s *section, a client.Analysis) {
	r.line(s, "Consensus:")
	if len(a.Consensus) == 0 {
		r.line(s, "  (none)")
	}
	for _, c := range a.Consensus {
		r.line(s, "  - "+c)
	}
	r.line(s, "Disagreements:")
	if len(a.Disagreements) == 0 {
		r.line(s, "  (none)")
	}
	for _, d := range a.Disagreements {
		r.line(s, "  - "+d.Topic)
		for _, p := range d.Positions {
			r.line(s, fmt.Sprintf("      %s: %s", p.Model, p.Position))
		}
	}
	r.line(s, "Unique claims:")
	if len(a.UniqueClaims) == 0 {
		r.line(s, "  (none)")
	}
	for _, c := range a.UniqueClaims {
		r.line(s, fmt.Sprintf("  - %s: %s", c.Model, c.Claim))
	}
}

// snapshot returns the section of snapshot index, making it when missing.
func (r *Renderer) snapshot(index int, label, date string) *section {
	if s, ok := r.snaps[index]; ok {
		return s
	}
	title := orDate(label, date)
	if title == "" {
		title = fmt.Sprintf("Snapshot %d", index+1)
	}
	if date != "" && label != "" && label != date {
		title += " (" + date + ")"
	}
	s := r.addSection(title)
	r.snaps[index] = s
	r.advance()
	return s
}

func (r *Renderer) keyChangesSection() *section {
	if r.keyChanges == nil {
		r.keyChanges = r.addSection("Key changes")
		r.advance()
	}
	return r.keyChanges
}

// answer returns the section of an ensemble's answer index, labelled by
// its model, making it when missing.
func (r *Renderer) answer(index int, model string) *section {
	if s, ok := r.snaps[index]; ok {
		return s
	}
	title := model
	if title == "" {
		title = fmt.Sprintf("Answer %d", index+1)
	}
	s := r.addSection(title)
	r.snaps[index] = s
	r.advance()
	return s
}

// ensembleParts makes the synthesis and the analysis sections, in this
// order whichever comes first: the synthesis streams, and the analysis,
// which often ends first, waits for it.
func (r *Renderer) ensembleParts() {
	if r.synthesis == nil {
		r.synthesis = r.addSection("Synthesis")
		r.analysis = r.addSection("Analysis")
		r.advance()
	}
}

func (r *Renderer) synthesisSection() *section {
	r.ensembleParts()
	return r.synthesis
}

func (r *Renderer) analysisSection() *section {
	r.ensembleParts()
	return r.analysis
}

func (r *Renderer) narrativeSection() *section {
	if r.narrative == nil {
		r.narrative = r.addSection("Narrative")
		r.advance()
	}
	return r.narrative
}

// Summary writes the final state of the job: status, snapshot counts,
// timings per stage and errors. It returns the first write error.
func (r *Renderer) Summary(v client.JobView) error {
	if v.Kind == client.KindEnsemble {
		return r.ensembleSummary(v)
	}
	done := 0
	for _, s := range v.Snapshots {
		if s.Status == client.SnapshotCompleted {
			done++
		}
	}
	t := v.Timings
	r.write("\n== Summary ==\n")
	r.printf("%-13s%s (%d of %s answered)\n", "Status:", v.Status, done, plural(len(v.Snapshots), "snapshot"))
	r.printf("%-13s%s\n", "Queue wait:", msp(t.QueueWaitMS))
	snaps := msp(t.SnapshotsMS)
	if len(t.SnapshotMS) > 0 {
		var per []string
		for i, d := range t.SnapshotMS {
			label := fmt.Sprintf("#%d", i+1)
			if i < len(v.Snapshots) && v.Snapshots[i].Label != "" {
				label = v.Snapshots[i].Label
			}
			if d > 0 {
				per = append(per, label+" "+ms(d))
			} else {
				per = append(per, label+" -")
			}
		}
		snaps += " (" + strings.Join(per, ", ") + ")"
	}
	r.printf("%-13s%s\n", "Snapshots:", snaps)
	r.printf("%-13s%s\n", "Fan-in:", msp(t.FanInMS))
	r.printf("%-13s%s\n", "Key changes:", msp(t.KeyChangesMS))
	r.printf("%-13s%s\n", "Narrative:", msp(t.NarrativeMS))
	r.printf("%-13s%s\n", "Total:", msp(t.TotalMS))
	if len(v.Errors) > 0 {
		r.write("Errors:\n")
		for _, e := range v.Errors {
			r.printf("  - %s\n", e)
		}
	}
	return r.err
}

// ensembleSummary is Summary for an ensemble: answers per model, the
// synthesis and the analysis.
func (r *Renderer) ensembleSummary(v client.JobView) error {
	done := 0
	for _, a := range v.Answers {
		if a.Status == client.SnapshotCompleted {
			done++
		}
	}
	t := v.Timings
	r.write("\n== Summary ==\n")
	r.printf("%-13s%s (%d of %s answered)\n", "Status:", v.Status, done, plural(len(v.Answers), "model"))
	r.printf("%-13s%s\n", "Queue wait:", msp(t.QueueWaitMS))
	answers := msp(t.AnswersMS)
	if len(t.AnswerMS) > 0 {
		var per []string
		for i, d := range t.AnswerMS {
			label := fmt.Sprintf("#%d", i+1)
			if i < len(v.Answers) && v.Answers[i].Label != "" {
				label = v.Answers[i].Label
			}
			switch {
			case i < len(v.Answers) && v.Answers[i].Cached:
				per = append(per, label+" cached")
			case d > 0:
				per = append(per, label+" "+ms(d))
			default:
				per = append(per, label+" -")
			}
		}
		answers += " (" + strings.Join(per, ", ") + ")"
	}
	r.printf("%-13s%s\n", "Answers:", answers)
	r.printf("%-13s%s\n", "Fan-in:", msp(t.FanInMS))
	r.printf("%-13s%s\n", "Synthesis:", msp(t.SynthesisMS))
	r.printf("%-13s%s\n", "Analysis:", msp(t.AnalysisMS))
	r.printf("%-13s%s\n", "Total:", msp(t.TotalMS))
	if len(v.Errors) > 0 {
		r.write("Errors:\n")
		for _, e := range v.Errors {
			r.printf("  - %s\n", e)
		}
	}
	return r.err
}

// ExitCode maps a job's final status to ttctl's exit status: 0 for
// completed and partial, 1 otherwise.
func ExitCode(s client.JobStatus) int {
	if s == client.StatusCompleted || s == client.StatusPartial {
		return 0
	}
	return 1
}

func orDate(label, date string) string {
	if label != "" {
		return label
	}
	return date
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func msp(p *int64) string {
	if p == nil {
		return "-"
	}
	return ms(*p)
}

// ms formats milliseconds for people: 850ms, 2.3s, 1m05s.
func ms(n int64) string {
	d := time.Duration(n) * time.Millisecond
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", n)
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	default:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
}
