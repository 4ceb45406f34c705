// Package job holds the domain of a job of any kind: what a user asks for
// (Spec), the job's state machine, its members (the calls that fan out,
// one per time point or per model) and its result (the parts of the
// aggregation over the members), and the common shape in which a job is
// shown to clients. What a kind adds (its request, prompts and view) lives
// in the kind's package (see package jobkind). It has no I/O.
package job

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"time"
)

// Status is the state of a job. A job moves queued → running → aggregating →
// one of the terminal states; any non-terminal state may also go straight to
// canceled, and aggregating may end partial or failed at the deadline.
type Status string

// Job statuses.
const (
	StatusQueued      Status = "queued"
	StatusRunning     Status = "running"
	StatusAggregating Status = "aggregating"
	StatusCompleted   Status = "completed"
	StatusPartial     Status = "partial"
	StatusFailed      Status = "failed"
	StatusCanceled    Status = "canceled"
)

// Terminal reports whether s is a final status: nothing changes a job after it.
func (s Status) Terminal() bool {
	switch s {
	case StatusCompleted, StatusPartial, StatusFailed, StatusCanceled:
		return true
	}
	return false
}

// MemberStatus is the state of one member's answer.
type MemberStatus string

// Member statuses.
const (
	MemberPending   MemberStatus = "pending"
	MemberRunning   MemberStatus = "running"
	MemberCompleted MemberStatus = "completed"
	MemberFailed    MemberStatus = "failed"
	// MemberCanceled: the job was canceled before the member finished.
	MemberCanceled MemberStatus = "canceled"
	// MemberExpired: the job ended (at its deadline, or when its
	// aggregation could not wait) before the member finished.
	MemberExpired MemberStatus = "expired"
)

// Done reports whether the member has its final outcome from the model
// (answered, or failed for good); only such members count towards fan-in.
func (s MemberStatus) Done() bool { return s == MemberCompleted || s == MemberFailed }

// Terminal reports whether the member will not change again: done, or
// stopped when its job ended.
func (s MemberStatus) Terminal() bool {
	return s.Done() || s == MemberCanceled || s == MemberExpired
}

// Noun is what a kind calls its members, in the singular ("snapshot",
// "answer"): its member events are named <noun>.started and so on, and
// its stage of member calls <noun>s.
type Noun string

// Plural is the noun in the plural (an "s" appended).
func (n Noun) Plural() string { return string(n) + "s" }

// Spec is a validated request: everything a job needs to run. The fields
// here are those every kind has; Params holds what the kind adds (time
// travel: its time points and complexity), which only the kind reads.
type Spec struct {
	// Kind names the job's kind (see package jobkind).
	Kind     string `json:"kind,omitempty"`
	Question string `json:"question"`
	// Model is the model the request named; empty: the configured default.
	Model string `json:"model,omitempty"`
	// Cache says whether the job may reuse cached answers: CacheUse, or
	// CacheBypass, which skips cache reads but still writes what the job
	// computes.
	Cache CacheMode `json:"cache"`
	// CallbackURL, when set, gets the job's result in a signed webhook
	// once the job ends. It was checked at submission (webhook.Policy).
	CallbackURL string `json:"callback_url,omitempty"`
	// Warm marks a cache-warming job: its tasks run on the warm queue,
	// within the provider capacity share of warming.
	Warm bool `json:"warm,omitempty"`
	// Owner is the id of the API key that submitted the job (AnonymousOwner
	// when the api runs without keys); its quotas pay for the job's
	// provider tokens. Set by the api, never by the request body.
	Owner string `json:"owner,omitempty"`
	// Params is the kind's own part of the request, as its kind encodes it.
	Params json.RawMessage `json:"params,omitempty"`
}

// AnonymousOwner owns the jobs submitted without an API key, on a server
// that does not require one (local development, make demo).
const AnonymousOwner = "anonymous"

// SystemOwner owns the jobs the service makes for itself (cache warming).
const SystemOwner = "system"

// CacheMode is how a job uses the answer caches.
type CacheMode string

// Cache modes.
const (
	// CacheUse reads cached answers and writes new ones.
	CacheUse CacheMode = "use"
	// CacheBypass computes every answer afresh and writes them to the
	// cache for later jobs.
	CacheBypass CacheMode = "bypass"
)

// ReadsCache reports whether the job may be served cached answers.
func (s Spec) ReadsCache() bool { return s.Cache != CacheBypass }

// Member is one of a job's member calls (a time point's answer, a model's
// answer) and its bookkeeping. Times are Unix milliseconds; zero means
// "not yet". Model is the model asked and, once the member is done, the
// model that answered (a fallback when the model was out of service).
// Attempts counts the deliveries of its task that claimed it; LLMAttempts
// the requests sent to providers for it over all of them, failed ones
// included.
type Member struct {
	Index int `json:"index"`
	// Label names the member for people ("March 2023", "gpt-4o").
	Label string `json:"label"`
	// Ref holds the further fields its kind names the member by (time
	// travel: "date"); in JSON they sit beside index and label, in views
	// and in every event of the member. They never use the name of a
	// field of Member.
	Ref         map[string]string `json:"-"`
	Status      MemberStatus      `json:"status"`
	Text        string            `json:"text,omitempty"`
	Model       string            `json:"model,omitempty"`
	Attempts    int               `json:"attempts"`
	LLMAttempts int               `json:"llm_attempts,omitempty"`
	Error       string            `json:"error,omitempty"`
	StartedAt   int64             `json:"started_at_ms,omitempty"`
	CompletedAt int64             `json:"completed_at_ms,omitempty"`
	// Cached is set when the answer came from the member cache (no model
	// was called for it).
	Cached bool `json:"cached,omitempty"`
}

type memberJSON Member

// MarshalJSON writes the member with its Ref fields beside the others.
func (m Member) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(memberJSON(m))
	if err != nil || len(m.Ref) == 0 {
		return b, err
	}
	return mergeObject(b, m.Ref)
}

// UnmarshalJSON reads a member written by MarshalJSON: the fields that are
// not Member's are its Ref.
func (m *Member) UnmarshalJSON(b []byte) error {
	var v memberJSON
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return err
	}
	for k, raw := range all {
		if memberFields[k] {
			continue
		}
		var s string
		if json.Unmarshal(raw, &s) != nil {
			continue
		}
		if v.Ref == nil {
			v.Ref = map[string]string{}
		}
		v.Ref[k] = s
	}
	*m = Member(v)
	return nil
}

// memberFields are the JSON names of Member's own fields, which no Ref
// field may take.
var memberFields = map[string]bool{
	"index": true, "label": true, "status": true, "text": true, "model": true, "attempts": true,
	"llm_attempts": true, "error": true, "started_at_ms": true, "completed_at_ms": true, "cached": true,
}

// ReservedField reports whether name is a field of Member's JSON, which a
// kind's Ref must not use.
func ReservedField(name string) bool { return memberFields[name] }

// RefData is the member's identity as its events carry it: index, label
// and the Ref fields.
func (m Member) RefData() map[string]any {
	d := make(map[string]any, len(m.Ref)+2)
	for k, v := range m.Ref {
		d[k] = v
	}
	d["index"], d["label"] = m.Index, m.Label
	return d
}

// mergeObject adds fields to the JSON object b.
func mergeObject(b []byte, fields map[string]string) ([]byte, error) {
	// A Ref field never takes a Member field's name: should one try, the
	// member's own field wins, as the events' payloads have it.
	for k := range fields {
		if memberFields[k] {
			kept := make(map[string]string, len(fields))
			for k, v := range fields {
				if !memberFields[k] {
					kept[k] = v
				}
			}
			fields = kept
			break
		}
	}
	extra, err := json.Marshal(fields)
	if err != nil {
		return nil, err
	}
	return JoinObjects(b, extra)
}

// Part is one part of a job's aggregation: a call over the members'
// answers whose outcome is streamed text (Text) or a structured value
// (Value, the kind's JSON). Error set means the part failed.
type Part struct {
	Name  string          `json:"name"`
	Value json.RawMessage `json:"value,omitempty"`
	Text  string          `json:"text,omitempty"`
	Error string          `json:"error,omitempty"`
	// Model answered (or last failed); LLMAttempts counts the requests
	// the part sent; MS is how long its call took.
	Model       string `json:"model,omitempty"`
	LLMAttempts int    `json:"llm_attempts,omitempty"`
	MS          int64  `json:"ms,omitempty"`
}

// Result is the outcome of a job's aggregation: its parts, in the kind's
// order.
type Result struct {
	Parts []Part `json:"parts"`
	// StartedAt is when the aggregation began (Unix ms).
	StartedAt int64 `json:"started_at_ms,omitempty"`
	// Cached is set when the parts came from the result cache.
	Cached bool `json:"cached,omitempty"`
}

// Part returns the part named name, or nil.
func (r *Result) Part(name string) *Part {
	if r == nil {
		return nil
	}
	for i := range r.Parts {
		if r.Parts[i].Name == name {
			return &r.Parts[i]
		}
	}
	return nil
}

// Set puts p in place of the part of its name, or adds it.
func (r *Result) Set(p Part) {
	if q := r.Part(p.Name); q != nil {
		*q = p
		return
	}
	r.Parts = append(r.Parts, p)
}

// Failed reports whether a part of the result failed.
func (r *Result) Failed() bool {
	if r == nil {
		return false
	}
	for _, p := range r.Parts {
		if p.Error != "" {
			return true
		}
	}
	return false
}

// WebhookStatus is the state of the delivery of a job's result to its
// callback URL.
type WebhookStatus string

// Webhook delivery statuses: pending from the moment the delivery is
// queued until it is delivered (a 2xx answer) or has failed for good.
const (
	WebhookPending   WebhookStatus = "pending"
	WebhookDelivered WebhookStatus = "delivered"
	WebhookFailed    WebhookStatus = "failed"
)

// Final reports whether the delivery has its outcome.
func (s WebhookStatus) Final() bool { return s == WebhookDelivered || s == WebhookFailed }

// Webhook is the delivery state of a job's callback. LastStatusCode and
// LastError describe the latest attempt that did not deliver (the status
// code also that of the one that did); Attempts counts the requests made.
type Webhook struct {
	Status         WebhookStatus `json:"status"`
	Attempts       int           `json:"attempts"`
	LastStatusCode int           `json:"last_status_code,omitempty"`
	LastError      string        `json:"last_error,omitempty"`
	DeliveredAt    *time.Time    `json:"delivered_at,omitempty"`
}

// Job is the full state of a job as stored.
type Job struct {
	ID   string `json:"job_id"`
	Spec Spec   `json:"-"`
	// Noun is what the job's kind calls its members.
	Noun       Noun      `json:"-"`
	Status     Status    `json:"status"`
	CreatedAt  time.Time `json:"created_at"`
	Deadline   time.Time `json:"deadline"`
	FinishedAt time.Time `json:"-"`
	Members    []Member  `json:"members"`
	Result     *Result   `json:"-"`
	Error      string    `json:"-"`
	// Accepted holds the fields the job's kind adds to its job.accepted
	// event (a JSON object; time travel: its time points and complexity).
	Accepted json.RawMessage `json:"-"`
	// Webhook is the callback's delivery state; nil until it is queued.
	Webhook *Webhook `json:"-"`
	// Fingerprint identifies the request for in-flight deduplication
	// (package cache); empty when the job takes no part in it.
	Fingerprint string `json:"-"`
	// Of is set on a handle: the job of a request that joined an
	// identical job in flight. It names that job, which does the work;
	// the handle has its own id and owner.
	Of string `json:"-"`
	// Detached lists, by job or handle id, the callers that canceled their
	// part in this job while others still wanted it (see SeenBy).
	Detached map[string]Detach `json:"-"`
	// ExpectedWait is how long the job's member calls were expected to
	// wait for provider capacity when it was accepted; nil when unknown.
	// Only its job.accepted event carries it: it is not stored.
	ExpectedWait *time.Duration `json:"-"`
}

// Detach records when a caller let go of a shared job, and the id of the
// event that marks it on the job's stream (the caller's stream ends there).
type Detach struct {
	At     time.Time
	Marker string
}

// CanceledByClient is the error of a job its caller canceled.
const CanceledByClient = "canceled by the client"

// SeenBy returns the job as the caller of handle sees it: j's work and
// state under the handle's id, owner and creation time (handle is j
// itself for the caller that started j). A caller that detached sees its
// job canceled at that moment, whatever became of the shared work.
func (j *Job) SeenBy(handle *Job) *Job {
	v := *j
	v.ID, v.Spec.Owner, v.CreatedAt, v.Of = handle.ID, handle.Spec.Owner, handle.CreatedAt, ""
	v.Detached = nil
	if handle.ID != j.ID {
		// The webhook and the deduplication entry belong to the job that
		// started the work.
		v.Webhook, v.Fingerprint = nil, ""
	}
	d, ok := j.Detached[handle.ID]
	if !ok {
		return &v
	}
	v.Status, v.FinishedAt, v.Error = StatusCanceled, d.At, CanceledByClient
	v.Members = make([]Member, len(j.Members))
	for i, s := range j.Members {
		if !s.Status.Terminal() || s.CompletedAt > d.At.UnixMilli() {
			s.Status, s.Text, s.Error, s.CompletedAt = MemberCanceled, "", "", 0
		}
		v.Members[i] = s
	}
	if r := j.Result; r != nil {
		v.Result = &Result{StartedAt: r.StartedAt}
		if r.StartedAt > d.At.UnixMilli() {
			v.Result = nil
		}
	}
	return &v
}

// Cached reports whether the whole job was served from the caches: every
// member and the aggregation.
func (j *Job) Cached() bool {
	if j.Result == nil || !j.Result.Cached {
		return false
	}
	for _, s := range j.Members {
		if !s.Cached {
			return false
		}
	}
	return true
}

// Completed returns the members that completed, in order.
func (j *Job) Completed() []Member {
	var out []Member
	for _, m := range j.Members {
		if m.Status == MemberCompleted {
			out = append(out, m)
		}
	}
	return out
}

// Timings are the per-stage durations of a job in milliseconds; a stage that
// has not happened is nil.
type Timings struct {
	// QueueWaitMS is from acceptance to the first member starting.
	QueueWaitMS *int64
	// MembersMS is from the first member starting to the last one ending.
	MembersMS *int64
	// MemberMS has each member's own duration, by index (0 when
	// unfinished).
	MemberMS []int64
	// FanInMS is from the last member ending to aggregation starting.
	FanInMS *int64
	// Parts are the aggregation's parts, which run concurrently.
	Parts []PartTiming
	// TotalMS is from acceptance to the terminal state.
	TotalMS *int64
}

// PartTiming is the duration of one part of the aggregation and the
// requests it sent to providers, failed ones included.
type PartTiming struct {
	Name        string
	MS          int64
	LLMAttempts int
}

// Timings derives the stage durations from the job's timestamps.
func (j *Job) Timings() Timings {
	var t Timings
	created := j.CreatedAt.UnixMilli()
	var firstStart, lastEnd int64
	per := make([]int64, len(j.Members))
	anyDone := false
	for i, s := range j.Members {
		if s.StartedAt > 0 && (firstStart == 0 || s.StartedAt < firstStart) {
			firstStart = s.StartedAt
		}
		if s.Status.Done() && s.CompletedAt > 0 {
			anyDone = true
			if s.CompletedAt > lastEnd {
				lastEnd = s.CompletedAt
			}
			if s.StartedAt > 0 {
				per[i] = s.CompletedAt - s.StartedAt
			}
		}
	}
	if firstStart > 0 {
		t.QueueWaitMS = ptr(max(firstStart-created, 0))
	}
	if anyDone {
		t.MemberMS = per
		if firstStart > 0 {
			t.MembersMS = ptr(max(lastEnd-firstStart, 0))
		}
	}
	if r := j.Result; r != nil {
		if r.StartedAt > 0 && lastEnd > 0 {
			t.FanInMS = ptr(max(r.StartedAt-lastEnd, 0))
		}
		for _, p := range r.Parts {
			t.Parts = append(t.Parts, PartTiming{Name: p.Name, MS: p.MS, LLMAttempts: p.LLMAttempts})
		}
	}
	if !j.FinishedAt.IsZero() {
		t.TotalMS = ptr(max(j.FinishedAt.UnixMilli()-created, 0))
	}
	return t
}

func ptr(v int64) *int64 { return &v }

// Stages returns the named stage durations of t for a job whose members
// are noun: queue_wait, <noun>s, fan_in, each part by its name, total.
// Stages that have not happened are left out.
func (t Timings) Stages(noun Noun) map[string]int64 {
	s := map[string]int64{}
	add := func(name string, v *int64) {
		if v != nil {
			s[name] = *v
		}
	}
	add("queue_wait", t.QueueWaitMS)
	add(noun.Plural(), t.MembersMS)
	add("fan_in", t.FanInMS)
	for _, p := range t.Parts {
		if p.MS > 0 {
			s[p.Name] = p.MS
		}
	}
	add("total", t.TotalMS)
	return s
}

// TimingsView is how a job's timings are shown (in the job's view):
// queue_wait_ms, <noun>s_ms, <noun>_ms (per member), fan_in_ms, <part>_ms
// and <part>_llm_attempts for each part, total_ms; stages that have not
// happened are left out.
type TimingsView struct {
	Timings
	Noun Noun
}

// MarshalJSON writes the timings under the names above.
func (v TimingsView) MarshalJSON() ([]byte, error) {
	o := map[string]any{}
	set := func(name string, p *int64) {
		if p != nil {
			o[name] = *p
		}
	}
	set("queue_wait_ms", v.QueueWaitMS)
	set(v.Noun.Plural()+"_ms", v.MembersMS)
	if len(v.MemberMS) > 0 {
		o[string(v.Noun)+"_ms"] = v.MemberMS
	}
	set("fan_in_ms", v.FanInMS)
	for _, p := range v.Parts {
		if p.MS > 0 {
			o[p.Name+"_ms"] = p.MS
		}
		if p.LLMAttempts > 0 {
			o[p.Name+"_llm_attempts"] = p.LLMAttempts
		}
	}
	set("total_ms", v.TotalMS)
	return json.Marshal(o)
}

// View is how a job is shown to clients (GET /api/jobs/{id}, webhooks):
// the fields every kind has, and the kind's own (Fields, a JSON object
// whose fields sit beside these).
type View struct {
	ID       string    `json:"job_id"`
	Kind     string    `json:"kind"`
	Status   Status    `json:"status"`
	Question string    `json:"question"`
	Model    string    `json:"model,omitempty"`
	Cache    CacheMode `json:"cache"`
	// Cached is set when the whole job was served from the caches.
	Cached      bool        `json:"cached"`
	Warm        bool        `json:"warm,omitempty"`
	CreatedAt   time.Time   `json:"created_at"`
	Deadline    time.Time   `json:"deadline"`
	FinishedAt  *time.Time  `json:"finished_at,omitempty"`
	Timings     TimingsView `json:"timings"`
	Errors      []string    `json:"errors"`
	CallbackURL string      `json:"callback_url,omitempty"`
	Webhook     *Webhook    `json:"webhook,omitempty"`
	// Fields are the kind's own fields (see jobkind.Kind.View).
	Fields any `json:"-"`
}

type viewJSON View

// MarshalJSON writes the view with the kind's fields beside the others;
// a kind's field never replaces a common one. A kind's view is a struct
// whose names are checked once per type: then the two objects are joined
// as they are, one encoding and no decoding (a GET of a job is the api's
// most frequent read).
func (v View) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(viewJSON(v))
	if err != nil || v.Fields == nil {
		return b, err
	}
	extra, err := json.Marshal(v.Fields)
	if err != nil {
		return nil, err
	}
	if disjointFromView(reflect.TypeOf(v.Fields)) {
		return JoinObjects(b, extra)
	}
	var o, e map[string]json.RawMessage
	if err := json.Unmarshal(b, &o); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(extra, &e); err != nil {
		return nil, err
	}
	for k, raw := range e {
		if _, taken := o[k]; !taken {
			o[k] = raw
		}
	}
	return json.Marshal(o)
}

// viewNames are View's JSON field names.
var viewNames = func() map[string]bool {
	out := map[string]bool{}
	for _, n := range structJSONNames(reflect.TypeFor[viewJSON]()) {
		out[n] = true
	}
	return out
}()

// disjoint caches disjointFromView per type.
var disjoint sync.Map // reflect.Type → bool

// disjointFromView reports whether t is a struct (or a pointer to one)
// whose JSON names (without embedded structs) are all different from
// View's.
func disjointFromView(t reflect.Type) bool {
	if ok, seen := disjoint.Load(t); seen {
		return ok.(bool)
	}
	st := t
	for st.Kind() == reflect.Pointer {
		st = st.Elem()
	}
	ok := st.Kind() == reflect.Struct
	if ok {
		for i := range st.NumField() {
			if st.Field(i).Anonymous {
				ok = false
			}
		}
		for _, n := range structJSONNames(st) {
			if viewNames[n] {
				ok = false
			}
		}
	}
	disjoint.Store(t, ok)
	return ok
}

// structJSONNames returns the JSON names of struct type t's fields.
func structJSONNames(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
	}
	return out
}

// JoinObjects returns the JSON object with a's fields, then b's: both
// must be JSON objects (as json.Marshal writes them) whose field names
// differ. It copies bytes only.
func JoinObjects(a, b []byte) ([]byte, error) {
	a, b = bytes.TrimSpace(a), bytes.TrimSpace(b)
	if len(a) < 2 || a[0] != '{' || a[len(a)-1] != '}' || len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return nil, errors.New("job: join of values that are not JSON objects")
	}
	if len(bytes.TrimSpace(b[1:len(b)-1])) == 0 {
		return a, nil
	}
	if len(bytes.TrimSpace(a[1:len(a)-1])) == 0 {
		return b, nil
	}
	out := make([]byte, 0, len(a)+len(b))
	out = append(out, a[:len(a)-1]...)
	out = append(out, ',')
	return append(out, b[1:]...), nil
}

// View returns the common part of the client-facing form of the job; the
// caller adds its kind's Fields. Errors lists, in a stable order, every
// failure that shaped the outcome. CallbackURL is shown without its
// query, fragment and user info: they may hold the receiver's own token,
// which the view (and the webhook body made of it) must not repeat.
func (j *Job) View() View {
	v := View{
		ID:        j.ID,
		Kind:      j.Spec.Kind,
		Status:    j.Status,
		Question:  j.Spec.Question,
		Model:     j.Spec.Model,
		Cache:     j.Spec.Cache,
		Cached:    j.Cached(),
		Warm:      j.Spec.Warm,
		CreatedAt: j.CreatedAt.UTC(),
		Deadline:  j.Deadline.UTC(),
		Timings:   TimingsView{Timings: j.Timings(), Noun: j.Noun},
		Errors:    j.Errors(),
		Webhook:   j.Webhook,
	}
	if j.Spec.CallbackURL != "" {
		// A URL that does not parse (never one accepted at submission) is
		// not shown at all rather than shown whole.
		if u, err := url.Parse(j.Spec.CallbackURL); err == nil {
			u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
			v.CallbackURL = u.String()
		}
	}
	if !j.FinishedAt.IsZero() {
		f := j.FinishedAt.UTC()
		v.FinishedAt = &f
	}
	return v
}

// Errors lists, in a stable order, every failure that shaped the job's
// outcome: the job's, each member's ("<noun> <label>: ...") and each
// part's ("<part name, _ as space>: ...").
func (j *Job) Errors() []string {
	out := []string{}
	if j.Error != "" {
		out = append(out, j.Error)
	}
	for _, s := range j.Members {
		if s.Error != "" {
			out = append(out, string(j.Noun)+" "+s.Label+": "+s.Error)
		}
	}
	if r := j.Result; r != nil {
		for _, p := range r.Parts {
			if p.Error != "" {
				out = append(out, strings.ReplaceAll(p.Name, "_", " ")+": "+p.Error)
			}
		}
	}
	return out
}
