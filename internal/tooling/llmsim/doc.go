// Package llmsim is an OpenAI-compatible LLM simulator. It stands in for an
// external LLM provider in development, end-to-end tests and load tests, where
// no real provider can be reached.
//
// The simulator serves the subset of the OpenAI HTTP API that the time-travel
// service uses, in a form accepted unchanged by the go-openai client (point
// its BaseURL at "http://host:port/v1"):
//
//	POST /v1/chat/completions   streaming (SSE) and non-streaming
//	GET  /v1/models             the configured models
//	GET  /v1/models/{model}     one model
//	GET  /healthz               200 "ok"
//	GET  /sim/stats             request, in-flight, fault and streamed token counters (see [Stats])
//	POST /sim/stats/reset       reset the counters and the request numbering
//	GET  /sim/faults            the fault rules in force (see [FaultState])
//	POST /sim/faults            set a runtime fault rule: a [FaultRule] as JSON
//	DELETE /sim/faults          clear the runtime fault rules (?model=M: only M's)
//
// Every answer is generated deterministically from the model name, the dates
// (YYYY-MM-DD) found in the messages and the question (the user messages), and
// is labelled as simulated: prose answers start with "[Simulated answer]" and
// invented key changes end with "(simulated)". No answer is ever a real model
// output. Three kinds of request are recognised:
//
//   - JSON mode (response_format type "json_object" or "json_schema"): key
//     changes between consecutive dates, as
//     {"transitions":[{"from","to","changes":[...]}]}.
//   - exactly one date: a snapshot answer as of that date (60 to 150 words).
//     Questions about AI models are answered from a small built-in timeline
//     of public model releases, listing only models released by that date.
//   - no date or several dates: a narrative of how the answer evolved,
//     mentioning every date.
//
// The ensemble kind's prompts (package ensemble) are recognised first: a
// member's answer is written in the model's own words, with a leaning of
// its own so that the models differ; the synthesis merges "the N answers";
// the analysis (JSON mode) has one point of consensus, one disagreement
// with the position of each model whose answer it was given, and a claim
// only the first of them made.
//
// Timing follows [Config]: time to first token, tokens per second, or a fixed
// total latency per model. Waiting uses timers and stops as soon as the
// request's context is cancelled; with zero delays nothing waits at all.
//
// # Faults
//
// The simulator injects provider faults into chat completions, for
// resilience tests: 429 with Retry-After, 500, 503, a 401 that quotes the
// request's API key (for tests that a provider's words go no further), a
// hang that sends nothing until the client gives up, a slow first token, a
// stream broken mid-way, and invalid JSON in JSON mode (see [FaultKind]). Faults come from
// rules per model, in [Config].Faults (the llmsim command reads them from
// LLMSIM_FAULTS, in the syntax of [ParseFaults]) or set at run time with
// POST /sim/faults, for example
//
//	{"model":"sim-snapshot","faults":[{"kind":"503","rate":1}],"count":1}
//
// for "the next request of sim-snapshot gets a 503"; or per request with
// the [FaultHeader] header. Rule decisions are deterministic: whether the
// Nth request of a model gets a fault is a pure function of the seed, the
// model, N and the rule's faults (see [PickFault]), so a re-run with the same
// seed and the same request order per model sees the same faults. The
// faults injected are counted by kind in [Stats], and [Control] drives all
// this from another process.
package llmsim
