package llmsim

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// FaultHeader is the request header that forces faults on one chat
// completion, regardless of any rule: "X-Llmsim-Fault: break" or
// "X-Llmsim-Fault: slow_first_token;break". It names either one of the
// faults that replace the response (429, 500, 503, 401, hang) alone, or any
// combination of the faults that alter it (slow_first_token, break,
// bad_json); ';' and ',' both separate names. Anything else is refused with
// a 400 invalid_header error, and the request is not counted.
const FaultHeader = "X-Llmsim-Fault"

// Defaults of the fault parameters, used where [Config] leaves them zero.
const (
	DefaultFaultSeed      uint64 = 1
	DefaultRetryAfter            = time.Second
	DefaultSlowFirstToken        = 5 * time.Second
)

// AnyModel as the model of a [FaultRule] makes it match every model.
const AnyModel = "*"

// FaultKind names a fault the simulator can inject into a chat completion.
type FaultKind string

// The faults. The first five replace the response; the last three alter it.
const (
	// FaultRateLimit answers 429 with an OpenAI-style rate limit error, a
	// Retry-After header in whole seconds (rounded up) and a Retry-After-Ms
	// header in milliseconds, both from Config.RetryAfter.
	FaultRateLimit FaultKind = "429"
	// FaultServerError answers 500 with an OpenAI-style server error.
	FaultServerError FaultKind = "500"
	// FaultUnavailable answers 503 with an OpenAI-style overload error.
	FaultUnavailable FaultKind = "503"
	// FaultUnauthorized answers 401 with an OpenAI-style invalid_api_key
	// error whose message quotes the credentials of the request (its
	// Authorization header, or Azure's api-key header), as some providers
	// do: tests use it to check that a key in a provider's error goes no
	// further than the client.
	FaultUnauthorized FaultKind = "401"
	// FaultHang reads the request and then sends nothing, not even headers,
	// until the client goes away (or [Server.Close]); the connection is then
	// aborted. The handler returns as soon as the request's context ends.
	FaultHang FaultKind = "hang"
	// FaultSlowFirstToken delays the first token (and everything after it)
	// so that it comes no earlier than Config.SlowFirstToken after the
	// request; a stream's headers are still sent at once.
	FaultSlowFirstToken FaultKind = "slow_first_token"
	// FaultBreak breaks the answer mid-way: a stream sends the first half of
	// its token chunks at their usual pace and then the connection is
	// aborted, with neither a finish_reason nor [DONE]; a non-streaming
	// request waits half its latency and then the connection is aborted with
	// no response at all.
	FaultBreak FaultKind = "break"
	// FaultBadJSON makes a JSON mode answer invalid JSON: a label followed by
	// the first half of the JSON text. It applies only to JSON mode requests;
	// for other requests it is not injected, nor counted.
	FaultBadJSON FaultKind = "bad_json"
)

// faultKinds lists every kind, in the order of [FaultCounts].
var faultKinds = []FaultKind{FaultRateLimit, FaultServerError, FaultUnavailable, FaultUnauthorized, FaultHang,
	FaultSlowFirstToken, FaultBreak, FaultBadJSON}

// FaultKinds returns every fault kind.
func FaultKinds() []FaultKind { return slices.Clone(faultKinds) }

// ParseFaultKind returns the kind named s, or an error listing the kinds.
func ParseFaultKind(s string) (FaultKind, error) {
	k := FaultKind(s)
	if !slices.Contains(faultKinds, k) {
		return "", fmt.Errorf("unknown fault %q (want one of %s)", s, kindList())
	}
	return k, nil
}

func kindList() string {
	names := make([]string, len(faultKinds))
	for i, k := range faultKinds {
		names[i] = string(k)
	}
	return strings.Join(names, ", ")
}

// replacesResponse reports whether k answers instead of the model.
func (k FaultKind) replacesResponse() bool {
	switch k {
	case FaultRateLimit, FaultServerError, FaultUnavailable, FaultUnauthorized, FaultHang:
		return true
	}
	return false
}

// Fault is one fault of a rule and the fraction of requests it hits.
type Fault struct {
	Kind FaultKind `json:"kind"`
	// Rate is the fraction of the rule's requests that get this fault, from
	// 0 to 1.
	Rate float64 `json:"rate"`
}

// FaultRule says which faults the requests of a model get.
//
// Each request a rule decides on gets at most one fault: with faults f1..fk
// of rates r1..rk (their sum at most 1), request number N of the model gets
// fi when r1+..+r(i-1) <= u < r1+..+ri, where u in [0, 1) is a hash of the
// seed, the model and N (see [PickFault]). The outcome is therefore a pure
// function of (seed, model, N, faults): a re-run with the same seed sees the
// same faults on the same request numbers, each fault hits its rate of the
// requests in the long run, and with a single fault the requests hit at a
// lower rate are a subset of those hit at a higher one.
type FaultRule struct {
	// Model is the model name the rule applies to; [AnyModel] ("*") matches
	// every model that has no rule of its own in the same set.
	Model string `json:"model"`
	// Faults are the faults and their rates; empty means no fault, which
	// still overrides the rules of lower precedence.
	Faults []Fault `json:"faults"`
	// Count limits the rule to the next Count requests it decides on, after
	// which it is removed; zero means until it is changed or cleared.
	Count int `json:"count,omitempty"`
}

// rateSlack absorbs rounding in the sum of a rule's rates.
const rateSlack = 1e-9

// Validate reports what is wrong with r, if anything: an empty model, a
// negative count, an unknown or repeated fault kind, a rate outside [0, 1]
// or rates that add up to more than 1.
func (r FaultRule) Validate() error {
	if r.Model == "" {
		return fmt.Errorf("fault rule: empty model name")
	}
	if r.Count < 0 {
		return fmt.Errorf("fault rule for %q: negative count %d", r.Model, r.Count)
	}
	sum := 0.0
	for i, f := range r.Faults {
		if _, err := ParseFaultKind(string(f.Kind)); err != nil {
			return fmt.Errorf("fault rule for %q: %w", r.Model, err)
		}
		if !(f.Rate >= 0 && f.Rate <= 1) {
			return fmt.Errorf("fault rule for %q: rate %v of %s is not between 0 and 1", r.Model, f.Rate, f.Kind)
		}
		if slices.ContainsFunc(r.Faults[:i], func(g Fault) bool { return g.Kind == f.Kind }) {
			return fmt.Errorf("fault rule for %q: fault %s given twice", r.Model, f.Kind)
		}
		sum += f.Rate
	}
	if sum > 1+rateSlack {
		return fmt.Errorf("fault rule for %q: rates add up to %v, more than 1", r.Model, sum)
	}
	return nil
}

// ParseFaults parses fault rules written as
//
//	model=fault:rate[+fault:rate...][,model=...]
//
// for example "sim-snapshot=500:0.10+429:0.05,sim-extract=bad_json:1" or
// "*=503:0.2". A fault without ":rate" has rate 1. Spaces around items are
// ignored; an empty or blank string gives no rules. Every rule must pass
// [FaultRule.Validate], and a model may appear only once. The rules keep
// the order of the string; Count is always zero.
func ParseFaults(spec string) ([]FaultRule, error) {
	if strings.TrimSpace(spec) == "" {
		return nil, nil
	}
	var rules []FaultRule
	for item := range strings.SplitSeq(spec, ",") {
		item = strings.TrimSpace(item)
		i := strings.LastIndexByte(item, '=')
		if i < 0 {
			return nil, fmt.Errorf("faults item %q: want model=fault:rate[+fault:rate...]", item)
		}
		rule := FaultRule{Model: strings.TrimSpace(item[:i])}
		if rule.Model == "" {
			return nil, fmt.Errorf("faults item %q: empty model name", item)
		}
		if slices.ContainsFunc(rules, func(r FaultRule) bool { return r.Model == rule.Model }) {
			return nil, fmt.Errorf("faults item %q: model %q given twice", item, rule.Model)
		}
		list := strings.TrimSpace(item[i+1:])
		if list == "" {
			return nil, fmt.Errorf("faults item %q: no fault after '='", item)
		}
		for entry := range strings.SplitSeq(list, "+") {
			name, rateText, hasRate := strings.Cut(strings.TrimSpace(entry), ":")
			kind, err := ParseFaultKind(strings.TrimSpace(name))
			if err != nil {
				return nil, fmt.Errorf("faults item %q: %w", item, err)
			}
			rate := 1.0
			if hasRate {
				rate, err = strconv.ParseFloat(strings.TrimSpace(rateText), 64)
				if err != nil {
					return nil, fmt.Errorf("faults item %q: rate of %s: %w", item, kind, err)
				}
			}
			rule.Faults = append(rule.Faults, Fault{Kind: kind, Rate: rate})
		}
		if err := rule.Validate(); err != nil {
			return nil, fmt.Errorf("faults item %q: %w", item, err)
		}
		rules = append(rules, rule)
	}
	return rules, nil
}

// FormatFaults writes rules in the syntax of [ParseFaults], which parses
// the result back to rules equal to the input when each rule's model has
// neither ',' nor surrounding spaces, it has at least one fault, and its
// Count is zero.
func FormatFaults(rules []FaultRule) string {
	var b strings.Builder
	for i, r := range rules {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(r.Model)
		b.WriteByte('=')
		for j, f := range r.Faults {
			if j > 0 {
				b.WriteByte('+')
			}
			b.WriteString(string(f.Kind))
			b.WriteByte(':')
			b.WriteString(strconv.FormatFloat(f.Rate, 'g', -1, 64))
		}
	}
	return b.String()
}

// PickFault returns the fault that request number n of model gets under
// faults with the given seed, and false for none: the decision of a
// [FaultRule], as a pure function. The server uses Config.FaultSeed, or
// [DefaultFaultSeed] when that is zero, and n counts the model's valid chat
// completion requests from 1 since the start or the last stats reset.
func PickFault(seed uint64, model string, n int64, faults []Fault) (FaultKind, bool) {
	u := faultDraw(seed, model, n)
	acc := 0.0
	for _, f := range faults {
		acc += f.Rate
		if u < acc {
			return f.Kind, true
		}
	}
	return "", false
}

// faultDraw hashes (seed, model, n) to a number uniform in [0, 1).
func faultDraw(seed uint64, model string, n int64) float64 {
	var b [8]byte
	h := fnv.New64a()
	binary.LittleEndian.PutUint64(b[:], seed)
	h.Write(b[:])
	h.Write([]byte(model))
	h.Write([]byte{0})
	binary.LittleEndian.PutUint64(b[:], uint64(n))
	h.Write(b[:])
	return float64(mix64(h.Sum64())>>11) / (1 << 53)
}

// mix64 is the splitmix64 finalizer: it spreads FNV's output, whose high
// bits change little between consecutive n, over all 64 bits.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// FaultCounts counts injected faults by kind; the JSON keys are the kinds
// ("429", "500", "503", "401", "hang", "slow_first_token", "break",
// "bad_json"), zero counts left out.
type FaultCounts struct {
	RateLimit      int64 `json:"429,omitempty"`
	ServerError    int64 `json:"500,omitempty"`
	Unavailable    int64 `json:"503,omitempty"`
	Unauthorized   int64 `json:"401,omitempty"`
	Hang           int64 `json:"hang,omitempty"`
	SlowFirstToken int64 `json:"slow_first_token,omitempty"`
	Break          int64 `json:"break,omitempty"`
	BadJSON        int64 `json:"bad_json,omitempty"`
}

func (c *FaultCounts) counter(k FaultKind) *int64 {
	switch k {
	case FaultRateLimit:
		return &c.RateLimit
	case FaultServerError:
		return &c.ServerError
	case FaultUnavailable:
		return &c.Unavailable
	case FaultUnauthorized:
		return &c.Unauthorized
	case FaultHang:
		return &c.Hang
	case FaultSlowFirstToken:
		return &c.SlowFirstToken
	case FaultBreak:
		return &c.Break
	case FaultBadJSON:
		return &c.BadJSON
	}
	return nil
}

// Of returns the count of kind k (zero for an unknown kind).
func (c FaultCounts) Of(k FaultKind) int64 {
	if p := c.counter(k); p != nil {
		return *p
	}
	return 0
}

// Total returns the count of all kinds.
func (c FaultCounts) Total() int64 {
	var n int64
	for _, k := range faultKinds {
		n += c.Of(k)
	}
	return n
}

// FaultRuleState is a rule in force and how many requests it has left.
type FaultRuleState struct {
	FaultRule
	// Remaining is how many more requests the rule decides on; zero when
	// the rule has no Count.
	Remaining int `json:"remaining,omitempty"`
}

// FaultState is the fault configuration in force, as served by GET
// /sim/faults. Within each list, rules are sorted by model.
type FaultState struct {
	Seed uint64 `json:"seed"`
	// Runtime are the rules set through POST /sim/faults or
	// [Server.SetRuntimeFaults]; they take precedence over Config.
	Runtime []FaultRuleState `json:"runtime"`
	// Config are the rules of Config.Faults still in force.
	Config []FaultRuleState `json:"config"`
}

// activeRule is a rule in force; remaining counts down when rule.Count > 0.
type activeRule struct {
	rule      FaultRule
	remaining int
}

// faultTable holds the rules; it is safe for concurrent use.
//
// The rule that decides a request of model M is the first that exists
// among runtime[M], runtime["*"], config[M], config["*"].
type faultTable struct {
	seed    uint64
	mu      sync.Mutex
	runtime map[string]*activeRule
	config  map[string]*activeRule
}

func newFaultTable(seed uint64, rules []FaultRule) *faultTable {
	t := &faultTable{seed: seed, runtime: map[string]*activeRule{}, config: map[string]*activeRule{}}
	for _, r := range rules {
		t.config[r.Model] = newActiveRule(r)
	}
	return t
}

func newActiveRule(r FaultRule) *activeRule {
	r.Faults = slices.Clone(r.Faults)
	return &activeRule{rule: r, remaining: r.Count}
}

// set installs a runtime rule, replacing the model's previous one.
func (t *faultTable) set(r FaultRule) error {
	if err := r.Validate(); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.runtime[r.Model] = newActiveRule(r)
	return nil
}

// clear removes the runtime rules of models, or all of them.
func (t *faultTable) clear(models ...string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(models) == 0 {
		clear(t.runtime)
	}
	for _, m := range models {
		delete(t.runtime, m)
	}
}

// pick decides the fault of request number n of model, consuming one use
// of the deciding rule when it has a Count.
func (t *faultTable) pick(model string, n int64) (FaultKind, bool) {
	t.mu.Lock()
	var faults []Fault
	for _, src := range []struct {
		set map[string]*activeRule
		key string
	}{{t.runtime, model}, {t.runtime, AnyModel}, {t.config, model}, {t.config, AnyModel}} {
		a := src.set[src.key]
		if a == nil {
			continue
		}
		faults = a.rule.Faults
		if a.rule.Count > 0 {
			if a.remaining--; a.remaining <= 0 {
				delete(src.set, src.key)
			}
		}
		break
	}
	t.mu.Unlock()
	return PickFault(t.seed, model, n, faults)
}

func (t *faultTable) state() FaultState {
	t.mu.Lock()
	defer t.mu.Unlock()
	list := func(m map[string]*activeRule) []FaultRuleState {
		out := make([]FaultRuleState, 0, len(m))
		for _, a := range m {
			r := a.rule
			r.Faults = slices.Clone(r.Faults)
			s := FaultRuleState{FaultRule: r}
			if r.Count > 0 {
				s.Remaining = a.remaining
			}
			out = append(out, s)
		}
		slices.SortFunc(out, func(a, b FaultRuleState) int { return strings.Compare(a.Model, b.Model) })
		return out
	}
	return FaultState{Seed: t.seed, Runtime: list(t.runtime), Config: list(t.config)}
}

// parseFaultHeader reads the faults forced by [FaultHeader] values.
func parseFaultHeader(values []string) ([]FaultKind, *apiError) {
	var kinds []FaultKind
	for _, v := range values {
		for name := range strings.FieldsFuncSeq(v, func(r rune) bool { return r == ';' || r == ',' }) {
			k, err := ParseFaultKind(strings.TrimSpace(name))
			if err != nil {
				return nil, invalid("invalid_header", "Header %s: %v.", FaultHeader, err)
			}
			if !slices.Contains(kinds, k) {
				kinds = append(kinds, k)
			}
		}
	}
	if len(kinds) > 1 && slices.ContainsFunc(kinds, FaultKind.replacesResponse) {
		return nil, invalid("invalid_header",
			"Header %s: 429, 500, 503, 401 and hang must be alone; only slow_first_token, break and bad_json combine.", FaultHeader)
	}
	return kinds, nil
}

// retryAfterSeconds is the Retry-After value of d: whole seconds, rounded up.
func retryAfterSeconds(d time.Duration) string {
	return strconv.FormatInt(int64(math.Ceil(d.Seconds())), 10)
}
