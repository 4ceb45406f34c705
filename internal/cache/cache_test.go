package cache

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// testTTLs are lifetimes far enough apart to tell which one a key got.
var testTTLs = TTLs{Past: 48 * time.Hour, Today: 10 * time.Minute}

// testNow is a fixed "now", so that written times do not depend on when
// the test runs.
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

// roundTrips counts the requests a client sends to Redis (a pipeline is
// one).
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmd)
	}
}
func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmds)
	}
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
		name     string
		volatile bool
		want     time.Duration
	}{
		{"volatile (today)", true, testTTLs.Today},
		{"not volatile (the past)", false, testTTLs.Past},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := testTTLs.For(tt.volatile); got != tt.want {
				t.Errorf("For(%v) = %s, want %s", tt.volatile, got, tt.want)
			}
		})
	}
}

// snapID is what a time-travel-like kind names one cacheable answer by;
// key builds its CacheKey the way kinds do (Identity over the normalised
// question and every other field).
type snapID struct {
	Question, Model, Provider, Date, Label, Complexity string
}

func (id snapID) key() string {
	return Identity(struct {
		K, V, Q, M, P, D, L, C string
	}{"timetravel", "v1", NormalizeQuestion(id.Question), id.Model, id.Provider, id.Date, id.Label, id.Complexity})
}

// baseSnapID is the ID the key tests vary.
var baseSnapID = snapID{
	Question:   "What are the best AI models?",
	Model:      "gpt-4o",
	Provider:   "openai https://api.example/v1",
	Date:       "2024-05-01",
	Label:      "May 2024",
	Complexity: "standard",
}

func TestMemberKey(t *testing.T) {
	t.Parallel()
	with := func(f func(*snapID)) snapID {
		id := baseSnapID
		f(&id)
		return id
	}
	tests := []struct {
		name string
		id   snapID
		same bool
	}{
		{"identical", baseSnapID, true},
		{"extra spaces", with(func(id *snapID) { id.Question = "  What  are the\tbest AI   models?  " }), true},
		{"no-break space", with(func(id *snapID) { id.Question = "What are the best AI\u00a0models?" }), true},
		{"lower case", with(func(id *snapID) { id.Question = "what are the best ai models?" }), false},
		{"upper case", with(func(id *snapID) { id.Question = "WHAT ARE THE BEST AI MODELS?" }), false},
		{"no question mark", with(func(id *snapID) { id.Question = "What are the best AI models" }), false},
		{"several question marks", with(func(id *snapID) { id.Question = "What are the best AI models???" }), false},
		{"a line break", with(func(id *snapID) { id.Question = "What are the best\nAI models?" }), false},
		{"another question", with(func(id *snapID) { id.Question = "What are the worst AI models?" }), false},
		{"another word order", with(func(id *snapID) { id.Question = "What AI models are the best?" }), false},
		{"another model", with(func(id *snapID) { id.Model = "gpt-4o-mini" }), false},
		{"no model", with(func(id *snapID) { id.Model = "" }), false},
		{"another provider name", with(func(id *snapID) { id.Provider = "azure https://api.example/v1" }), false},
		{"another provider base URL", with(func(id *snapID) { id.Provider = "openai https://proxy.example/v1" }), false},
		{"no provider", with(func(id *snapID) { id.Provider = "" }), false},
		{"provider and model swapped", with(func(id *snapID) { id.Model, id.Provider = id.Provider, id.Model }), false},
		{"another date", with(func(id *snapID) { id.Date = "2024-05-02" }), false},
		{"another label", with(func(id *snapID) { id.Label = "Spring 2024" }), false},
		{"another complexity", with(func(id *snapID) { id.Complexity = "detailed" }), false},
		{"no complexity", with(func(id *snapID) { id.Complexity = "" }), false},
		// Fields must not run into each other.
		{"model and date shifted", with(func(id *snapID) { id.Model, id.Date = "gpt-4o2024-05-01", "" }), false},
	}
	base := baseSnapID.key()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			key := tt.id.key()
			if (key == base) != tt.same {
				t.Errorf("%+v: key %s, base key %s; want same = %v", tt.id, key, base, tt.same)
			}
			if key != tt.id.key() {
				t.Error("Identity is not deterministic")
			}
			// The Redis entries follow the kind's keys.
			if (MemberRedisKey(key) == MemberRedisKey(base)) != tt.same {
				t.Errorf("%+v: Redis key %s, base %s; want same = %v", tt.id, MemberRedisKey(key), MemberRedisKey(base), tt.same)
			}
		})
	}
}

func TestIdentity(t *testing.T) {
	t.Parallel()
	type pair struct{ A, B string }
	tests := []struct {
		name string
		a, b any
		same bool
	}{
		{"equal values", pair{"x", "y"}, pair{"x", "y"}, true},
		{"equal slices", []string{"a", "b"}, []string{"a", "b"}, true},
		{"field boundary", pair{"ab", ""}, pair{"a", "b"}, false},
		{"fields swapped", pair{"x", "y"}, pair{"y", "x"}, false},
		{"slice boundary", []string{"ab", "c"}, []string{"a", "bc"}, false},
		{"slice order", []string{"a", "b"}, []string{"b", "a"}, false},
		{"an element fewer", []string{"a", "b"}, []string{"a"}, false},
		{"string or its encoding", "x", `"x"`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a, b := Identity(tt.a), Identity(tt.b)
			if (a == b) != tt.same {
				t.Errorf("Identity(%#v) = %s, Identity(%#v) = %s; want same = %v", tt.a, a, tt.b, b, tt.same)
			}
			if len(a) != 32 {
				t.Errorf("Identity(%#v) = %q: want 32 hex digits", tt.a, a)
			}
		})
	}
	defer func() {
		if recover() == nil {
			t.Error("Identity of a value that does not encode did not panic")
		}
	}()
	Identity(func() {})
}

func TestRedisKeys(t *testing.T) {
	t.Parallel()
	k := baseSnapID.key()
	// The result cache and the member cache never share a key, even for
	// one kind key.
	if MemberRedisKey(k) == ResultRedisKey(k) {
		t.Error("a member entry and a result entry share a key")
	}
	long := string(make([]byte, 10000))
	if n := len(MemberRedisKey(long)); n > 64 {
		t.Errorf("a long kind key makes a Redis key of %d bytes", n)
	}
	if MemberRedisKey("a") == MemberRedisKey("b") || ResultRedisKey("a") == ResultRedisKey("b") {
		t.Error("two kind keys share a Redis key")
	}
}

// memberAnswer is an answer a result is made from.
type memberAnswer struct{ Date, Label, Text string }

// aggID is what a time-travel-like kind names one cacheable aggregation
// by; key builds its ResultKey the way kinds do.
type aggID struct {
	Question, Complexity                  string
	ExtractionModel, NarrativeModel       string
	ExtractionProvider, NarrativeProvider string
	Members                               []memberAnswer
}

func (id aggID) key() string {
	return Identity(struct {
		K, V, Q, C, E, EP, N, NP string
		S                        []memberAnswer
	}{"timetravel", "v1", NormalizeQuestion(id.Question), id.Complexity,
		id.ExtractionModel, id.ExtractionProvider, id.NarrativeModel, id.NarrativeProvider, id.Members})
}

func baseAggID() aggID {
	return aggID{
		Question:           "What are the best AI models?",
		Complexity:         "standard",
		ExtractionModel:    "extract",
		NarrativeModel:     "narrate",
		ExtractionProvider: "fast https://fast.example/v1",
		NarrativeProvider:  "big https://big.example/v1",
		Members: []memberAnswer{
			{"2023-01-01", "January 2023", "GPT-3.5."},
			{"2024-05-01", "May 2024", "GPT-4o."},
		},
	}
}

func TestResultKey(t *testing.T) {
	t.Parallel()
	with := func(f func(*aggID)) aggID {
		id := baseAggID()
		f(&id)
		return id
	}
	tests := []struct {
		name string
		id   aggID
		same bool
	}{
		{"equal inputs", baseAggID(), true},
		{"question spelled differently", with(func(id *aggID) { id.Question = "  What are the best\tAI  models? " }), true},
		{"question in lower case", with(func(id *aggID) { id.Question = "what are the best ai models?" }), false},
		{"another question", with(func(id *aggID) { id.Question = "What are the worst AI models?" }), false},
		{"a member's text", with(func(id *aggID) { id.Members[1].Text = "GPT-4o!" }), false},
		{"a member's date", with(func(id *aggID) { id.Members[0].Date = "2023-01-02" }), false},
		{"a member's label", with(func(id *aggID) { id.Members[0].Label = "Early 2023" }), false},
		{"members swapped", with(func(id *aggID) { id.Members[0], id.Members[1] = id.Members[1], id.Members[0] }), false},
		{"a member fewer", with(func(id *aggID) { id.Members = id.Members[:1] }), false},
		{"text moved between members", with(func(id *aggID) {
			id.Members[0].Text, id.Members[1].Text = "GPT-3.5.GPT-4o.", ""
		}), false},
		{"extraction model", with(func(id *aggID) { id.ExtractionModel = "extract-2" }), false},
		{"narrative model", with(func(id *aggID) { id.NarrativeModel = "narrate-2" }), false},
		{"models swapped", with(func(id *aggID) { id.ExtractionModel, id.NarrativeModel = id.NarrativeModel, id.ExtractionModel }), false},
		{"extraction provider", with(func(id *aggID) { id.ExtractionProvider = "fast https://other.example/v1" }), false},
		{"narrative provider", with(func(id *aggID) { id.NarrativeProvider = "other https://big.example/v1" }), false},
		{"no providers", with(func(id *aggID) { id.ExtractionProvider, id.NarrativeProvider = "", "" }), false},
		{"providers swapped", with(func(id *aggID) {
			id.ExtractionProvider, id.NarrativeProvider = id.NarrativeProvider, id.ExtractionProvider
		}), false},
		{"complexity", with(func(id *aggID) { id.Complexity = "brief" }), false},
	}
	base := baseAggID().key()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			key := tt.id.key()
			if (key == base) != tt.same {
				t.Errorf("key %s, base key %s; want same = %v", key, base, tt.same)
			}
			if (ResultRedisKey(key) == ResultRedisKey(base)) != tt.same {
				t.Errorf("Redis key %s, base %s; want same = %v", ResultRedisKey(key), ResultRedisKey(base), tt.same)
			}
		})
	}
	// The result cache and the member cache never share a key.
	if ResultRedisKey(baseAggID().key()) == MemberRedisKey(baseSnapID.key()) {
		t.Error("a result and a member share a key")
	}
}

// fpReq is a time-travel-like request as the fingerprint sees it: the
// member keys of its time points and its switches.
type fpReq struct {
	kind, question, model, provider, complexity string
	timePoints                                  [][2]string // date, label
	result                                      string
	bypass, warm                                bool
	callback                                    string
}

func (r fpReq) fingerprint() string {
	keys := make([]string, len(r.timePoints))
	for i, tp := range r.timePoints {
		keys[i] = snapID{r.question, r.model, r.provider, tp[0], tp[1], r.complexity}.key()
	}
	return Fingerprint(r.kind, keys, r.result, r.bypass, r.warm, r.callback)
}

func baseReq() fpReq {
	return fpReq{
		kind:       "timetravel",
		question:   "What are the best AI models?",
		model:      "gpt-4o",
		provider:   "openai https://api.example/v1",
		complexity: "standard",
		timePoints: [][2]string{{"2023-01-01", "January 2023"}, {"2024-05-01", "May 2024"}},
	}
}

func TestFingerprint(t *testing.T) {
	t.Parallel()
	with := func(f func(*fpReq)) fpReq {
		r := baseReq()
		f(&r)
		return r
	}
	tests := []struct {
		name string
		req  fpReq
		same bool
	}{
		{"equal", baseReq(), true},
		{"question spelled differently", with(func(r *fpReq) { r.question = " What are the best  AI models? " }), true},
		{"question in another case", with(func(r *fpReq) { r.question = "WHAT are the best AI models?" }), false},
		{"another question", with(func(r *fpReq) { r.question = "What are the worst AI models?" }), false},
		{"another model", with(func(r *fpReq) { r.model = "gpt-4o-mini" }), false},
		{"another provider", with(func(r *fpReq) { r.provider = "openai https://proxy.example/v1" }), false},
		{"no provider", with(func(r *fpReq) { r.provider = "" }), false},
		{"model and provider run together", with(func(r *fpReq) { r.model, r.provider = "gpt-4oopenai https://api.example/v1", "" }), false},
		{"another complexity", with(func(r *fpReq) { r.complexity = "brief" }), false},
		{"a callback URL", with(func(r *fpReq) { r.callback = "https://example.com/hook" }), false},
		{"another time point date", with(func(r *fpReq) { r.timePoints[1][0] = "2024-05-02" }), false},
		{"another time point label", with(func(r *fpReq) { r.timePoints[1][1] = "Spring 2024" }), false},
		{"a time point fewer", with(func(r *fpReq) { r.timePoints = r.timePoints[:1] }), false},
		{"time points swapped", with(func(r *fpReq) { r.timePoints[0], r.timePoints[1] = r.timePoints[1], r.timePoints[0] }), false},
		// force_time_travel reaches the fingerprint as a cache bypass.
		{"cache bypass", with(func(r *fpReq) { r.bypass = true }), false},
		{"warm", with(func(r *fpReq) { r.warm = true }), false},
		{"another kind", with(func(r *fpReq) { r.kind = "ensemble" }), false},
		{"a result identity", with(func(r *fpReq) { r.result = "synthesis:v2" }), false},
	}
	base := baseReq().fingerprint()
	if base == "" {
		t.Fatal("no fingerprint for the base request")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if fp := tt.req.fingerprint(); (fp == base) != tt.same {
				t.Errorf("fingerprint %s, base %s; want same = %v", fp, base, tt.same)
			}
		})
	}
}

func TestFingerprintFields(t *testing.T) {
	t.Parallel()
	keys := []string{"k1", "k2"}
	base := Fingerprint("kind", keys, "r", false, false, "")
	tests := []struct {
		name string
		fp   string
		same bool
	}{
		{"equal", Fingerprint("kind", []string{"k1", "k2"}, "r", false, false, ""), true},
		{"member keys run together", Fingerprint("kind", []string{"k1k2"}, "r", false, false, ""), false},
		{"a member key moved to the result", Fingerprint("kind", []string{"k1"}, "k2r", false, false, ""), false},
		{"kind and result swapped", Fingerprint("r", keys, "kind", false, false, ""), false},
		{"result in the callback", Fingerprint("kind", keys, "", false, false, "r"), false},
		{"bypass", Fingerprint("kind", keys, "r", true, false, ""), false},
		{"warm", Fingerprint("kind", keys, "r", false, true, ""), false},
	}
	for _, tt := range tests {
		if (tt.fp == base) != tt.same {
			t.Errorf("%s: fingerprint %s, base %s; want same = %v", tt.name, tt.fp, base, tt.same)
		}
	}
	if Fingerprint("kind", keys, "r", true, false, "") == Fingerprint("kind", keys, "r", false, true, "") {
		t.Error("bypass and warm share a fingerprint")
	}
	// A job whose members are not all identified is never deduplicated.
	for name, keys := range map[string][]string{"no members": nil, "a member without a key": {"k1", ""}} {
		if fp := Fingerprint("kind", keys, "r", false, false, ""); fp != "" {
			t.Errorf("%s: fingerprint %q, want none", name, fp)
		}
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
			snapA, snapB := baseSnapID, baseSnapID
			snapA.Question, snapB.Question = p.a, p.b
			if snapA.key() == snapB.key() {
				t.Errorf("member key: %q and %q share the key %s", p.a, p.b, snapA.key())
			}
			aggA, aggB := baseAggID(), baseAggID()
			aggA.Question, aggB.Question = p.a, p.b
			if aggA.key() == aggB.key() {
				t.Errorf("result key: %q and %q share the key %s", p.a, p.b, aggA.key())
			}
			reqA, reqB := baseReq(), baseReq()
			reqA.question, reqB.question = p.a, p.b
			if reqA.fingerprint() == reqB.fingerprint() {
				t.Errorf("Fingerprint: %q and %q share one", p.a, p.b)
			}
			// Equal inputs still make equal keys.
			snapA2 := snapA
			aggA2 := baseAggID()
			aggA2.Question = p.a
			reqA2 := baseReq()
			reqA2.question = p.a
			if snapA.key() != snapA2.key() || aggA.key() != aggA2.key() || reqA.fingerprint() != reqA2.fingerprint() {
				t.Errorf("%q: equal inputs, different keys", p.a)
			}
		})
	}
}

func TestMembersHitsAndMisses(t *testing.T) {
	t.Parallel()
	c, rdb := newCache(t)
	ctx := context.Background()
	keys := make([]string, 4)
	for i := range keys {
		id := baseSnapID
		id.Date = time.Date(2023, time.Month(1+i), 1, 0, 0, 0, 0, time.UTC).Format(time.DateOnly)
		keys[i] = id.key()
	}
	// Nothing cached yet.
	got, err := c.Members(ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(keys) {
		t.Fatalf("%d results for %d keys", len(got), len(keys))
	}
	for i, s := range got {
		if s != nil {
			t.Errorf("key %d: %+v on an empty cache, want a miss", i, s)
		}
	}
	// Cache 1 and 3, the second with its own time.
	if err := c.PutMember(ctx, keys[1], Answer{Text: "one", Model: "m1"}, false); err != nil {
		t.Fatal(err)
	}
	if err := c.PutMember(ctx, keys[3], Answer{Text: "three", Model: "m3", At: 42}, true); err != nil {
		t.Fatal(err)
	}
	// All keys, and an uncached member (no key), in one round trip.
	var rt roundTrips
	rdb.AddHook(&rt)
	got, err = c.Members(ctx, append(keys, ""))
	if err != nil {
		t.Fatal(err)
	}
	if n := rt.n.Load(); n != 1 {
		t.Errorf("%d round trips, want 1", n)
	}
	want := []*Answer{nil, {Text: "one", Model: "m1", At: testNow.UnixMilli()}, nil, {Text: "three", Model: "m3", At: 42}, nil}
	if len(got) != len(want) {
		t.Fatalf("%d results for %d keys", len(got), len(want))
	}
	for i := range want {
		switch {
		case want[i] == nil && got[i] != nil:
			t.Errorf("key %d: %+v, want a miss", i, got[i])
		case want[i] != nil && (got[i] == nil || *got[i] != *want[i]):
			t.Errorf("key %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	// A spelling of the question that normalises alike hits.
	other := baseSnapID
	other.Date = "2023-02-01"
	other.Question = "  What are the best\tAI  models?\n"
	got, err = c.Members(ctx, []string{other.key()})
	if err != nil || got[0] == nil || got[0].Text != "one" {
		t.Errorf("lookup by another spelling: %+v, %v; want the entry", got, err)
	}
	// No keys, or none set: no round trip, no error, a miss each.
	before := rt.n.Load()
	for _, keys := range [][]string{nil, {""}, {"", ""}} {
		got, err := c.Members(ctx, keys)
		if err != nil || len(got) != len(keys) {
			t.Errorf("Members(%q) = %v, %v", keys, got, err)
		}
		for _, a := range got {
			if a != nil {
				t.Errorf("Members(%q): %+v for no key, want a miss", keys, a)
			}
		}
	}
	if n := rt.n.Load() - before; n != 0 {
		t.Errorf("%d round trips for no keys", n)
	}
}

func TestPutMemberTTL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		volatile bool
		want     time.Duration
	}{
		{"past date", false, testTTLs.Past},
		{"today (volatile)", true, testTTLs.Today},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, rdb := newCache(t)
			key := baseSnapID.key()
			if err := c.PutMember(context.Background(), key, Answer{Text: "t", Model: "m"}, tt.volatile); err != nil {
				t.Fatal(err)
			}
			assertTTL(t, rdb, MemberRedisKey(key), tt.want)
		})
	}
}

func TestPutMemberRefusesEmptyText(t *testing.T) {
	t.Parallel()
	c, rdb := newCache(t)
	ctx := context.Background()
	if err := c.PutMember(ctx, baseSnapID.key(), Answer{Model: "m"}, false); err == nil {
		t.Fatal("PutMember with no text succeeded")
	}
	// An empty key is never cached, and that is no error.
	if err := c.PutMember(ctx, "", Answer{Text: "t", Model: "m"}, false); err != nil {
		t.Errorf("PutMember with no key: %v", err)
	}
	if n := rdb.DBSize(ctx).Val(); n != 0 {
		t.Errorf("%d entries written, want none", n)
	}
}

// parts is a complete result of a time-travel-like kind.
func parts() []job.Part {
	return []job.Part{
		{Name: "key_changes", Value: json.RawMessage(`[{"from":"2023-01-01","to":"2024-05-01","changes":["GPT-4o appeared"]}]`), Model: "extract"},
		{Name: "narrative", Text: "It changed.", Model: "narrate"},
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
	var keys []string
	var names []string
	for name, raw := range bad {
		id := baseSnapID
		id.Label = name
		keys, names = append(keys, id.key()), append(names, name)
		if err := rdb.Set(ctx, MemberRedisKey(id.key()), raw, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	good := baseSnapID.key()
	if err := c.PutMember(ctx, good, Answer{Text: "ok"}, false); err != nil {
		t.Fatal(err)
	}
	got, err := c.Members(ctx, append(keys, good))
	if err != nil {
		t.Fatal(err)
	}
	for i := range keys {
		if got[i] != nil {
			t.Errorf("%s entry read as %+v, want a miss", names[i], got[i])
		}
	}
	if g := got[len(keys)]; g == nil || g.Text != "ok" {
		t.Errorf("the good entry after corrupt ones: %+v", g)
	}

	for name, raw := range map[string]string{
		"not JSON":            "{",
		"wrong shape":         `["parts"]`,
		"no parts":            `{"parts":[]}`,
		"null parts":          `{"parts":null}`,
		"parts mistyped":      `{"parts":{"name":"narrative"}}`,
		"empty streamed":      `{"parts":[{"name":"key_changes","value":[]},{"name":"narrative","text":""}]}`,
		"null value":          `{"parts":[{"name":"key_changes","value":null},{"name":"narrative","text":"n"}]}`,
		"a failed part":       `{"parts":[{"name":"key_changes","value":[]},{"name":"narrative","text":"n","error":"boom"}]}`,
		"a part with no name": `{"parts":[{"value":[]},{"name":"narrative","text":"n"}]}`,
	} {
		id := baseAggID()
		id.Question = name
		if err := rdb.Set(ctx, ResultRedisKey(id.key()), raw, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		if r, err := c.Result(ctx, id.key()); r != nil || err != nil {
			t.Errorf("%s result entry: %+v, %v; want a miss", name, r, err)
		}
	}
}

func TestResultRoundTrip(t *testing.T) {
	t.Parallel()
	c, rdb := newCache(t)
	ctx := context.Background()
	key := baseAggID().key()
	if r, err := c.Result(ctx, key); r != nil || err != nil {
		t.Fatalf("Result on an empty cache = %+v, %v; want nil, nil", r, err)
	}
	// The job's bookkeeping is not cached.
	in := job.Result{Parts: parts(), StartedAt: 1234, Cached: true}
	in.Parts[0].MS, in.Parts[0].LLMAttempts = 900, 2
	in.Parts[1].MS, in.Parts[1].LLMAttempts = 3000, 1
	if err := c.PutResult(ctx, key, in, false); err != nil {
		t.Fatal(err)
	}
	got, err := c.Result(ctx, key)
	if err != nil || got == nil {
		t.Fatalf("Result after Put = %+v, %v", got, err)
	}
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(job.Result{Parts: parts()})
	if string(gb) != string(wb) {
		t.Errorf("round trip:\n got %s\nwant %s", gb, wb)
	}
	if got.Cached || got.StartedAt != 0 {
		t.Errorf("cached result has Cached %v, StartedAt %d; want false, 0", got.Cached, got.StartedAt)
	}
	// The entry says when it was made.
	var entry struct {
		At int64 `json:"at_ms"`
	}
	if err := json.Unmarshal([]byte(rdb.Get(ctx, ResultRedisKey(key)).Val()), &entry); err != nil || entry.At != testNow.UnixMilli() {
		t.Errorf("entry at %d, %v; want %d", entry.At, err, testNow.UnixMilli())
	}
	// Another set of members is another result.
	other := baseAggID()
	other.Members[1].Text = "Claude."
	if r, err := c.Result(ctx, other.key()); r != nil || err != nil {
		t.Errorf("Result of other members = %+v, %v; want a miss", r, err)
	}
	// No key changes at all (one member) is complete: an empty list.
	one := baseAggID()
	one.Members = one.Members[:1]
	single := job.Result{Parts: []job.Part{{Name: "key_changes", Value: json.RawMessage(`[]`)}, {Name: "narrative", Text: "n"}}}
	if err := c.PutResult(ctx, one.key(), single, false); err != nil {
		t.Fatal(err)
	}
	r, err := c.Result(ctx, one.key())
	if err != nil || r == nil || r.Part("key_changes") == nil || string(r.Part("key_changes").Value) != "[]" || r.Part("narrative").Text != "n" {
		t.Errorf("empty key changes round trip: %+v, %v", r, err)
	}
	if n := rdb.Exists(ctx, ResultRedisKey(key), ResultRedisKey(one.key())).Val(); n != 2 {
		t.Errorf("%d of 2 entries exist", n)
	}
	// No key: never cached.
	if r, err := c.Result(ctx, ""); r != nil || err != nil {
		t.Errorf("Result(\"\") = %+v, %v", r, err)
	}
}

func TestPutResultTTL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		volatile bool
		want     time.Duration
	}{
		{"all past", false, testTTLs.Past},
		{"made from an answer of today (volatile)", true, testTTLs.Today},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, rdb := newCache(t)
			key := baseAggID().key()
			if err := c.PutResult(context.Background(), key, job.Result{Parts: parts()}, tt.volatile); err != nil {
				t.Fatal(err)
			}
			assertTTL(t, rdb, ResultRedisKey(key), tt.want)
		})
	}
}

func TestPutResultRefusesIncomplete(t *testing.T) {
	t.Parallel()
	c, rdb := newCache(t)
	ctx := context.Background()
	failed := parts()
	failed[1].Error = "unfinished at the deadline"
	noNarrative := parts()
	noNarrative[1].Text = ""
	nullValue := parts()
	nullValue[0].Value = json.RawMessage(`null`)
	noName := parts()
	noName[0].Name = ""
	tests := []struct {
		name string
		r    job.Result
	}{
		{"no parts", job.Result{}},
		{"a failed part", job.Result{Parts: failed}},
		{"no narrative", job.Result{Parts: noNarrative}},
		{"null key changes", job.Result{Parts: nullValue}},
		{"a part with no name", job.Result{Parts: noName}},
		{"neither outcome", job.Result{Parts: []job.Part{{Name: "key_changes"}, {Name: "narrative"}}}},
	}
	for _, tt := range tests {
		id := baseAggID()
		id.Question = tt.name
		if Complete(tt.r.Parts) {
			t.Errorf("%s: Complete", tt.name)
		}
		if err := c.PutResult(ctx, id.key(), tt.r, false); err != nil {
			t.Errorf("%s: PutResult = %v, want no error", tt.name, err)
		}
		if n := rdb.Exists(ctx, ResultRedisKey(id.key())).Val(); n != 0 {
			t.Errorf("%s: the incomplete result was written", tt.name)
		}
	}
	// No key: nothing written either.
	if err := c.PutResult(ctx, "", job.Result{Parts: parts()}, false); err != nil {
		t.Errorf("PutResult with no key: %v", err)
	}
	if n := rdb.DBSize(ctx).Val(); n != 0 {
		t.Errorf("%d entries written, want none", n)
	}
	if !Complete(parts()) {
		t.Error("a complete result is not Complete")
	}
}
