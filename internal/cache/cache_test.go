package cache

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// testTTLs are lifetimes far enough apart to tell which one a key got.
var testTTLs = TTLs{Past: 48 * time.Hour, Today: 10 * time.Minute}

// testNow is a fixed "now", an hour before midnight UTC, so that today's
// date is not a matter of when the test runs.
var testNow = time.Date(2025, time.June, 15, 23, 0, 0, 0, time.UTC)

// newCache returns a cache on a database of its own whose clock reads
// testNow.
func newCache(t *testing.T) (*Cache, *redis.Client) {
	t.Helper()
	db := redistest.New(t)
	c := New(db.Client, testTTLs)
	c.now = func() time.Time { return testNow }
	return c, db.Client
}

// assertTTL fails unless key's PTTL is in (want - slack, want].
func assertTTL(t *testing.T, rdb *redis.Client, key string, want time.Duration) {
	t.Helper()
	const slack = 5 * time.Second
	got, err := rdb.PTTL(context.Background(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	if got <= want-slack || got > want {
		t.Errorf("PTTL(%s) = %s, want about %s", key, got, want)
	}
}

func TestTTLsFor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		date string
		now  time.Time
		want time.Duration
	}{
		{"today", "2025-06-15", testNow, testTTLs.Today},
		{"today, now in another zone", "2025-06-15", testNow.In(time.FixedZone("UTC+3", 3*3600)), testTTLs.Today}, // 02:00 on the 16th there
		{"yesterday", "2025-06-14", testNow, testTTLs.Past},
		{"long ago", "2023-01-01", testNow, testTTLs.Past},
		{"tomorrow", "2025-06-16", testNow, testTTLs.Today},
		{"next year", "2026-01-01", testNow, testTTLs.Today},
		{"first second of the day", "2025-06-15", time.Date(2025, 6, 15, 0, 0, 0, 0, time.UTC), testTTLs.Today},
		{"last second of the previous day", "2025-06-15", time.Date(2025, 6, 14, 23, 59, 59, 0, time.UTC), testTTLs.Today},
		{"the day after", "2025-06-15", time.Date(2025, 6, 16, 0, 0, 0, 0, time.UTC), testTTLs.Past},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := testTTLs.For(tt.date, tt.now); got != tt.want {
				t.Errorf("For(%s, %s) = %s, want %s", tt.date, tt.now, got, tt.want)
			}
		})
	}
}

func TestTTLsForAll(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		dates []string
		want  time.Duration
	}{
		{"no dates", nil, testTTLs.Past},
		{"all past", []string{"2023-01-01", "2024-05-01"}, testTTLs.Past},
		{"today last", []string{"2023-01-01", "2024-05-01", "2025-06-15"}, testTTLs.Today},
		{"today first", []string{"2025-06-15", "2023-01-01"}, testTTLs.Today},
		{"only today", []string{"2025-06-15"}, testTTLs.Today},
		{"a future date", []string{"2023-01-01", "2030-01-01"}, testTTLs.Today},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := testTTLs.ForAll(tt.dates, testNow); got != tt.want {
				t.Errorf("ForAll(%v) = %s, want %s", tt.dates, got, tt.want)
			}
		})
	}
}

// baseSnapshotID is the ID the key tests vary.
var baseSnapshotID = SnapshotID{
	Question:   "What are the best AI models?",
	Model:      "gpt-4o",
	Provider:   "openai https://api.example/v1",
	Date:       "2024-05-01",
	Label:      "May 2024",
	Complexity: job.ComplexityStandard,
}

func TestSnapshotIDKey(t *testing.T) {
	t.Parallel()
	with := func(f func(*SnapshotID)) SnapshotID {
		id := baseSnapshotID
		f(&id)
		return id
	}
	tests := []struct {
		name string
		id   SnapshotID
		same bool
	}{
		{"identical", baseSnapshotID, true},
		{"extra spaces", with(func(id *SnapshotID) { id.Question = "  What  are the\tbest AI   models?  " }), true},
		{"no-break space", with(func(id *SnapshotID) { id.Question = "What are the best AI\u00a0models?" }), true},
		{"lower case", with(func(id *SnapshotID) { id.Question = "what are the best ai models?" }), false},
		{"upper case", with(func(id *SnapshotID) { id.Question = "WHAT ARE THE BEST AI MODELS?" }), false},
		{"no question mark", with(func(id *SnapshotID) { id.Question = "What are the best AI models" }), false},
		{"several question marks", with(func(id *SnapshotID) { id.Question = "What are the best AI models???" }), false},
		{"a line break", with(func(id *SnapshotID) { id.Question = "What are the best\nAI models?" }), false},
		{"another question", with(func(id *SnapshotID) { id.Question = "What are the worst AI models?" }), false},
		{"another word order", with(func(id *SnapshotID) { id.Question = "What AI models are the best?" }), false},
		{"another model", with(func(id *SnapshotID) { id.Model = "gpt-4o-mini" }), false},
		{"no model", with(func(id *SnapshotID) { id.Model = "" }), false},
		{"another provider name", with(func(id *SnapshotID) { id.Provider = "azure https://api.example/v1" }), false},
		{"another provider base URL", with(func(id *SnapshotID) { id.Provider = "openai https://proxy.example/v1" }), false},
		{"no provider", with(func(id *SnapshotID) { id.Provider = "" }), false},
		{"provider and model swapped", with(func(id *SnapshotID) { id.Model, id.Provider = id.Provider, id.Model }), false},
		{"another date", with(func(id *SnapshotID) { id.Date = "2024-05-02" }), false},
		{"another label", with(func(id *SnapshotID) { id.Label = "Spring 2024" }), false},
		{"another complexity", with(func(id *SnapshotID) { id.Complexity = job.ComplexityDetailed }), false},
		{"no complexity", with(func(id *SnapshotID) { id.Complexity = "" }), false},
		// Fields must not run into each other.
		{"model and date shifted", with(func(id *SnapshotID) { id.Model, id.Date = "gpt-4o2024-05-01", "" }), false},
	}
	base := baseSnapshotID.Key()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			key := tt.id.Key()
			if (key == base) != tt.same {
				t.Errorf("%+v: key %s, base key %s; want same = %v", tt.id, key, base, tt.same)
			}
			if key != tt.id.Key() {
				t.Error("Key is not deterministic")
			}
		})
	}
}

func snaps() []job.Snapshot {
	return []job.Snapshot{
		{Index: 0, Date: "2023-01-01", Label: "January 2023", Text: "GPT-3.5.", Status: job.SnapshotCompleted, Model: "m"},
		{Index: 1, Date: "2024-05-01", Label: "May 2024", Text: "GPT-4o.", Status: job.SnapshotCompleted, Model: "m"},
	}
}

func baseAggregateID() AggregateID {
	return AggregateID{
		Question:           "What are the best AI models?",
		Complexity:         job.ComplexityStandard,
		ExtractionModel:    "extract",
		NarrativeModel:     "narrate",
		ExtractionProvider: "fast https://fast.example/v1",
		NarrativeProvider:  "big https://big.example/v1",
		Snapshots:          snaps(),
	}
}

func TestAggregateIDKey(t *testing.T) {
	t.Parallel()
	with := func(f func(*AggregateID)) AggregateID {
		id := baseAggregateID()
		f(&id)
		return id
	}
	tests := []struct {
		name string
		id   AggregateID
		same bool
	}{
		{"equal inputs", baseAggregateID(), true},
		{"question spelled differently", with(func(id *AggregateID) { id.Question = "  What are the best\tAI  models? " }), true},
		{"question in lower case", with(func(id *AggregateID) { id.Question = "what are the best ai models?" }), false},
		// Only date, label and text of a snapshot count.
		{"other snapshot bookkeeping", with(func(id *AggregateID) {
			id.Snapshots[0].Model, id.Snapshots[0].Attempts, id.Snapshots[1].Cached = "other", 3, true
		}), true},
		{"another question", with(func(id *AggregateID) { id.Question = "What are the worst AI models?" }), false},
		{"a snapshot's text", with(func(id *AggregateID) { id.Snapshots[1].Text = "GPT-4o!" }), false},
		{"a snapshot's date", with(func(id *AggregateID) { id.Snapshots[0].Date = "2023-01-02" }), false},
		{"a snapshot's label", with(func(id *AggregateID) { id.Snapshots[0].Label = "Early 2023" }), false},
		{"snapshots swapped", with(func(id *AggregateID) { id.Snapshots[0], id.Snapshots[1] = id.Snapshots[1], id.Snapshots[0] }), false},
		{"a snapshot fewer", with(func(id *AggregateID) { id.Snapshots = id.Snapshots[:1] }), false},
		{"text moved between snapshots", with(func(id *AggregateID) {
			id.Snapshots[0].Text, id.Snapshots[1].Text = "GPT-3.5.GPT-4o.", ""
		}), false},
		{"extraction model", with(func(id *AggregateID) { id.ExtractionModel = "extract-2" }), false},
		{"narrative model", with(func(id *AggregateID) { id.NarrativeModel = "narrate-2" }), false},
		{"models swapped", with(func(id *AggregateID) { id.ExtractionModel, id.NarrativeModel = id.NarrativeModel, id.ExtractionModel }), false},
		{"extraction provider", with(func(id *AggregateID) { id.ExtractionProvider = "fast https://other.example/v1" }), false},
		{"narrative provider", with(func(id *AggregateID) { id.NarrativeProvider = "other https://big.example/v1" }), false},
		{"no providers", with(func(id *AggregateID) { id.ExtractionProvider, id.NarrativeProvider = "", "" }), false},
		{"providers swapped", with(func(id *AggregateID) {
			id.ExtractionProvider, id.NarrativeProvider = id.NarrativeProvider, id.ExtractionProvider
		}), false},
		{"complexity", with(func(id *AggregateID) { id.Complexity = job.ComplexityBrief }), false},
	}
	base := baseAggregateID().Key()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if key := tt.id.Key(); (key == base) != tt.same {
				t.Errorf("key %s, base key %s; want same = %v", key, base, tt.same)
			}
		})
	}
	// The result cache and the snapshot cache never share a key.
	if baseAggregateID().Key() == baseSnapshotID.Key() {
		t.Error("an aggregate and a snapshot share a key")
	}
}

func baseSpec() job.Spec {
	return job.Spec{
		Question: "What are the best AI models?",
		TimePoints: []job.TimePoint{
			{Date: "2023-01-01", Label: "January 2023"},
			{Date: "2024-05-01", Label: "May 2024"},
		},
		Complexity: job.ComplexityStandard,
		Cache:      job.CacheUse,
	}
}

func TestFingerprint(t *testing.T) {
	t.Parallel()
	const provider = "openai https://api.example/v1"
	with := func(f func(*job.Spec)) job.Spec {
		s := baseSpec()
		f(&s)
		return s
	}
	tests := []struct {
		name     string
		spec     job.Spec
		model    string
		provider string
		same     bool
	}{
		{"equal", baseSpec(), "gpt-4o", provider, true},
		{"question spelled differently", with(func(s *job.Spec) { s.Question = " What are the best  AI models? " }), "gpt-4o", provider, true},
		{"cache mode unset reads the cache too", with(func(s *job.Spec) { s.Cache = "" }), "gpt-4o", provider, true},
		// The model that answers counts, not how the spec names it.
		{"model named in the spec", with(func(s *job.Spec) { s.Model = "gpt-4o" }), "gpt-4o", provider, true},
		{"question in another case", with(func(s *job.Spec) { s.Question = "WHAT are the best AI models?" }), "gpt-4o", provider, false},
		{"another question", with(func(s *job.Spec) { s.Question = "What are the worst AI models?" }), "gpt-4o", provider, false},
		{"another model", baseSpec(), "gpt-4o-mini", provider, false},
		{"another provider", baseSpec(), "gpt-4o", "openai https://proxy.example/v1", false},
		{"no provider", baseSpec(), "gpt-4o", "", false},
		{"model and provider run together", baseSpec(), "gpt-4oopenai https://api.example/v1", "", false},
		{"another complexity", with(func(s *job.Spec) { s.Complexity = job.ComplexityBrief }), "gpt-4o", provider, false},
		{"a callback URL", with(func(s *job.Spec) { s.CallbackURL = "https://example.com/hook" }), "gpt-4o", provider, false},
		{"another time point date", with(func(s *job.Spec) { s.TimePoints[1].Date = "2024-05-02" }), "gpt-4o", provider, false},
		{"another time point label", with(func(s *job.Spec) { s.TimePoints[1].Label = "Spring 2024" }), "gpt-4o", provider, false},
		{"a time point fewer", with(func(s *job.Spec) { s.TimePoints = s.TimePoints[:1] }), "gpt-4o", provider, false},
		{"cache bypass", with(func(s *job.Spec) { s.Cache = job.CacheBypass }), "gpt-4o", provider, false},
		{"force time travel", with(func(s *job.Spec) { s.ForceTimeTravel = true }), "gpt-4o", provider, false},
		{"warm", with(func(s *job.Spec) { s.Warm = true }), "gpt-4o", provider, false},
	}
	base := Fingerprint(baseSpec(), "gpt-4o", provider)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if fp := Fingerprint(tt.spec, tt.model, tt.provider); (fp == base) != tt.same {
				t.Errorf("fingerprint %s, base %s; want same = %v", fp, base, tt.same)
			}
		})
	}
	// Bypassing by either switch is the same request.
	bypass := with(func(s *job.Spec) { s.Cache = job.CacheBypass })
	force := with(func(s *job.Spec) { s.ForceTimeTravel, s.Cache = true, job.CacheBypass })
	if Fingerprint(bypass, "m", "p") != Fingerprint(force, "m", "p") {
		t.Error("cache bypass and force_time_travel (which implies it) have different fingerprints")
	}
}

// meaningPairs are questions that once shared cache entries and mean
// different things: each pair must get different keys everywhere.
var meaningPairs = []struct {
	name string
	a, b string
}{
	{"superscript (NFKC)", "Is 2⁵ greater than 30?", "Is 25 greater than 30?"},
	{"acronym case", "What does IT stand for?", "What does it stand for?"},
	{"indented code", "Why does this print 2?\nfor x in xs:\n    print(x)\nprint(x)", "Why does this print 2?\nfor x in xs:\nprint(x)\nprint(x)"},
	{"fenced code", "Why does this fail?\n```\nx  =  'a  b'\n```", "Why does this fail?\n```\nx = 'a b'\n```"},
	{"statement or question", "Pluto is a planet.", "Pluto is a planet?"},
}

func TestKeysKeepMeaning(t *testing.T) {
	t.Parallel()
	for _, p := range meaningPairs {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			snapA, snapB := baseSnapshotID, baseSnapshotID
			snapA.Question, snapB.Question = p.a, p.b
			if snapA.Key() == snapB.Key() {
				t.Errorf("SnapshotID: %q and %q share the key %s", p.a, p.b, snapA.Key())
			}
			aggA, aggB := baseAggregateID(), baseAggregateID()
			aggA.Question, aggB.Question = p.a, p.b
			if aggA.Key() == aggB.Key() {
				t.Errorf("AggregateID: %q and %q share the key %s", p.a, p.b, aggA.Key())
			}
			specA, specB := baseSpec(), baseSpec()
			specA.Question, specB.Question = p.a, p.b
			if Fingerprint(specA, "m", "p") == Fingerprint(specB, "m", "p") {
				t.Errorf("Fingerprint: %q and %q share one", p.a, p.b)
			}
			// Equal inputs still make equal keys.
			snapA2 := snapA
			aggA2 := baseAggregateID()
			aggA2.Question = p.a
			if snapA.Key() != snapA2.Key() || aggA.Key() != aggA2.Key() || Fingerprint(specA, "m", "p") != Fingerprint(specA, "m", "p") {
				t.Errorf("%q: equal inputs, different keys", p.a)
			}
		})
	}
}

func TestSnapshotsHitsAndMisses(t *testing.T) {
	t.Parallel()
	c, _ := newCache(t)
	ctx := context.Background()
	ids := make([]SnapshotID, 4)
	for i := range ids {
		ids[i] = baseSnapshotID
		ids[i].Date = time.Date(2023, time.Month(1+i), 1, 0, 0, 0, 0, time.UTC).Format(job.DateLayout)
	}
	// Nothing cached yet.
	got, err := c.Snapshots(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(ids) {
		t.Fatalf("%d results for %d ids", len(got), len(ids))
	}
	for i, s := range got {
		if s != nil {
			t.Errorf("id %d: %+v on an empty cache, want a miss", i, s)
		}
	}
	// Cache 1 and 3, the second with its own time.
	if err := c.PutSnapshot(ctx, ids[1], Snapshot{Text: "one", Model: "m1"}); err != nil {
		t.Fatal(err)
	}
	if err := c.PutSnapshot(ctx, ids[3], Snapshot{Text: "three", Model: "m3", At: 42}); err != nil {
		t.Fatal(err)
	}
	got, err = c.Snapshots(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	want := []*Snapshot{nil, {Text: "one", Model: "m1", At: testNow.UnixMilli()}, nil, {Text: "three", Model: "m3", At: 42}}
	for i := range want {
		switch {
		case want[i] == nil && got[i] != nil:
			t.Errorf("id %d: %+v, want a miss", i, got[i])
		case want[i] != nil && (got[i] == nil || *got[i] != *want[i]):
			t.Errorf("id %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	// A spelling of the question that normalises alike hits.
	other := ids[1]
	other.Question = "  What are the best\tAI  models?\n"
	got, err = c.Snapshots(ctx, []SnapshotID{other})
	if err != nil || got[0] == nil || got[0].Text != "one" {
		t.Errorf("lookup by another spelling: %+v, %v; want the entry", got, err)
	}
	// No ids: no round trip, no error.
	if got, err := c.Snapshots(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("Snapshots(nil) = %v, %v", got, err)
	}
}

func TestPutSnapshotTTL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		date string
		want time.Duration
	}{
		{"past date", "2023-01-01", testTTLs.Past},
		{"yesterday", "2025-06-14", testTTLs.Past},
		{"today", testNow.Format(job.DateLayout), testTTLs.Today},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, rdb := newCache(t)
			id := baseSnapshotID
			id.Date = tt.date
			if err := c.PutSnapshot(context.Background(), id, Snapshot{Text: "t", Model: "m"}); err != nil {
				t.Fatal(err)
			}
			assertTTL(t, rdb, id.Key(), tt.want)
		})
	}
}

func TestPutSnapshotRefusesEmptyText(t *testing.T) {
	t.Parallel()
	c, rdb := newCache(t)
	if err := c.PutSnapshot(context.Background(), baseSnapshotID, Snapshot{Model: "m"}); err == nil {
		t.Fatal("PutSnapshot with no text succeeded")
	}
	if n := rdb.Exists(context.Background(), baseSnapshotID.Key()).Val(); n != 0 {
		t.Error("an empty answer was written")
	}
}

func TestCorruptEntriesReadAsMisses(t *testing.T) {
	t.Parallel()
	c, rdb := newCache(t)
	ctx := context.Background()
	bad := map[string]string{
		"not JSON":      "{not json",
		"wrong shape":   `["text"]`,
		"empty text":    `{"text":"","model":"m"}`,
		"text mistyped": `{"text":42}`,
	}
	var ids []SnapshotID
	for name, raw := range bad {
		id := baseSnapshotID
		id.Label = name
		ids = append(ids, id)
		if err := rdb.Set(ctx, id.Key(), raw, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	good := baseSnapshotID
	if err := c.PutSnapshot(ctx, good, Snapshot{Text: "ok"}); err != nil {
		t.Fatal(err)
	}
	got, err := c.Snapshots(ctx, append(ids, good))
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if got[i] != nil {
			t.Errorf("%s entry read as %+v, want a miss", id.Label, got[i])
		}
	}
	if g := got[len(ids)]; g == nil || g.Text != "ok" {
		t.Errorf("the good entry after corrupt ones: %+v", g)
	}

	for name, raw := range map[string]string{
		"not JSON":        "{",
		"no narrative":    `{"key_changes":[],"narrative":""}`,
		"no key changes":  `{"narrative":"n"}`,
		"null key change": `{"key_changes":null,"narrative":"n"}`,
	} {
		id := baseAggregateID()
		id.Question = name
		if err := rdb.Set(ctx, id.Key(), raw, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		if a, err := c.Aggregate(ctx, id); a != nil || err != nil {
			t.Errorf("%s aggregate entry: %+v, %v; want a miss", name, a, err)
		}
	}
}

func TestAggregateRoundTrip(t *testing.T) {
	t.Parallel()
	c, rdb := newCache(t)
	ctx := context.Background()
	id := baseAggregateID()
	if a, err := c.Aggregate(ctx, id); a != nil || err != nil {
		t.Fatalf("Aggregate on an empty cache = %+v, %v; want nil, nil", a, err)
	}
	in := Aggregate{
		KeyChanges: []job.KeyChange{{
			From: "2023-01-01", To: "2024-05-01", FromLabel: "January 2023", ToLabel: "May 2024",
			Changes: []string{"GPT-4o appeared"},
		}},
		Narrative:       "It changed.",
		KeyChangesModel: "extract",
		NarrativeModel:  "narrate",
	}
	if err := c.PutAggregate(ctx, id, in); err != nil {
		t.Fatal(err)
	}
	got, err := c.Aggregate(ctx, id)
	if err != nil || got == nil {
		t.Fatalf("Aggregate after Put = %+v, %v", got, err)
	}
	in.At = testNow.UnixMilli()
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(in)
	if string(gb) != string(wb) {
		t.Errorf("round trip:\n got %s\nwant %s", gb, wb)
	}
	// Another set of snapshots is another result.
	other := baseAggregateID()
	other.Snapshots[1].Text = "Claude."
	if a, err := c.Aggregate(ctx, other); a != nil || err != nil {
		t.Errorf("Aggregate of other snapshots = %+v, %v; want a miss", a, err)
	}
	// No key changes at all (one snapshot) is complete: an empty list.
	one := baseAggregateID()
	one.Snapshots = one.Snapshots[:1]
	if err := c.PutAggregate(ctx, one, Aggregate{KeyChanges: []job.KeyChange{}, Narrative: "n"}); err != nil {
		t.Fatal(err)
	}
	if a, err := c.Aggregate(ctx, one); err != nil || a == nil || a.KeyChanges == nil || len(a.KeyChanges) != 0 {
		t.Errorf("empty key changes round trip: %+v, %v", a, err)
	}
	if n := rdb.Exists(ctx, id.Key(), one.Key()).Val(); n != 2 {
		t.Errorf("%d of 2 entries exist", n)
	}
}

func TestPutAggregateTTL(t *testing.T) {
	t.Parallel()
	today := testNow.Format(job.DateLayout)
	tests := []struct {
		name  string
		dates []string
		want  time.Duration
	}{
		{"all past", []string{"2023-01-01", "2024-05-01"}, testTTLs.Past},
		{"one of today", []string{"2023-01-01", "2024-05-01", today}, testTTLs.Today},
		{"today first", []string{today, "2023-01-01"}, testTTLs.Today},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, rdb := newCache(t)
			id := baseAggregateID()
			id.Snapshots = nil
			for i, d := range tt.dates {
				id.Snapshots = append(id.Snapshots, job.Snapshot{Index: i, Date: d, Label: d, Text: "t" + d})
			}
			if err := c.PutAggregate(context.Background(), id, Aggregate{KeyChanges: []job.KeyChange{}, Narrative: "n"}); err != nil {
				t.Fatal(err)
			}
			assertTTL(t, rdb, id.Key(), tt.want)
		})
	}
}

func TestPutAggregateRefusesIncomplete(t *testing.T) {
	t.Parallel()
	c, rdb := newCache(t)
	ctx := context.Background()
	tests := []struct {
		name string
		a    Aggregate
	}{
		{"no narrative", Aggregate{KeyChanges: []job.KeyChange{}}},
		{"nil key changes", Aggregate{Narrative: "n"}},
		{"neither", Aggregate{}},
	}
	for _, tt := range tests {
		id := baseAggregateID()
		id.Question = tt.name
		if err := c.PutAggregate(ctx, id, tt.a); err == nil {
			t.Errorf("%s: PutAggregate succeeded", tt.name)
		}
		if n := rdb.Exists(ctx, id.Key()).Val(); n != 0 {
			t.Errorf("%s: the incomplete result was written", tt.name)
		}
	}
}
