// Package ttctl is the command-line tool for the time-travel service:
// `ttctl ask` submits a question to a running API and shows the job's event
// stream as it arrives; `ttctl ensemble` does the same for an ensemble of
// models (each model's answer, then the synthesis and the analysis);
// `ttctl demo` builds and starts the whole service locally (with the LLM
// simulator unless a real provider is configured) and runs one job of each
// kind; `ttctl keys` creates, lists, limits and revokes API keys in the
// service's Redis. cmd/ttctl only calls Main.
package ttctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/tooling/stack"
)

// Exit statuses.
const (
	ExitOK     = 0 // the job completed (or ended partial)
	ExitFailed = 1 // the job failed or was canceled
	ExitUsage  = 2 // bad usage, a refused request or a connection problem
)

// DefaultQuestion is what the demo asks unless told otherwise.
const DefaultQuestion = "What are the best AI models?"

// DemoEnsembleModels are the simulated models of the demo's ensemble; the
// simulator gives each a different leaning, so that the analysis shows
// three positions.
var DemoEnsembleModels = []string{"sim-alpha", "sim-beta", "sim-omega"}

// Demo simulator settings: slow enough to watch the text stream.
var demoSimEnv = map[string]string{
	"LLMSIM_TTFT":              "150ms",
	"LLMSIM_TOKENS_PER_SECOND": "60",
}

const usage = `Usage:
  ttctl ask [-api URL] [-time-points LIST] [-model M] [-complexity C] [-force] "question"
  ttctl ensemble [-api URL] -models A,B[,C…] [-synthesis-model M] [-cache use|bypass] "question"
  ttctl demo [-question Q] [-time-points LIST] [-model M] [-complexity C] [-workers N]
             [-ensemble-models A,B,C] [-keep] ["question"]
  ttctl keys create|list|revoke|limits …

ask       submits a time-travel question to a running API and prints the
          answers as they stream (with the API key in TTCTL_API_KEY, when the
          API requires one).
ensemble  asks 2 to 8 models the same question (POST /api/ensemble) and prints
          each model's answer as it streams, then the synthesis that merges
          them, then the analysis: consensus, disagreements with who said
          what, and claims only one model made.
demo      builds and starts the whole service locally (redis, llmsim, workers,
          api), runs one time-travel job and one ensemble of three models, and
          stops everything (with -keep: prints the web page's URL and keeps
          the service running until Ctrl-C). It uses the LLM simulator unless OPENAI_API_KEY is
          set, in which case the workers use that provider (OPENAI_BASE_URL,
          LLM_MODEL) and the ensemble runs only with -ensemble-models.
keys      manages the API keys in the service's Redis (REDIS_URL, ...): "ttctl keys help"
          for more.

LIST is comma-separated: YYYY-MM-DD, "today", or YYYY-MM-DD=Label.
Exit status: 0 completed or partial, 1 failed or canceled, 2 usage or connection error.
`

// Main runs ttctl with args (without the program name) and returns the exit
// status. getenv reads the environment (os.Getenv in production).
func Main(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return ExitUsage
	}
	switch args[0] {
	case "ask":
		return ask(ctx, args[1:], getenv, stdout, stderr)
	case "ensemble":
		return ensembleCmd(ctx, args[1:], getenv, stdout, stderr)
	case "demo":
		return demo(ctx, args[1:], getenv, stdout, stderr)
	case "keys":
		return runKeys(ctx, args[1:], getenv, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return ExitOK
	default:
		fmt.Fprintf(stderr, "ttctl: unknown command %q\n\n%s", args[0], usage)
		return ExitUsage
	}
}

// requestFlags are the flags that shape a submission.
type requestFlags struct {
	timePoints string
	model      string
	complexity string
	force      bool
}

func (f *requestFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.timePoints, "time-points", "", "comma-separated time points: YYYY-MM-DD, today, or YYYY-MM-DD=Label (default: the API's)")
	fs.StringVar(&f.model, "model", "", "model to answer with (default: the service's)")
	fs.StringVar(&f.complexity, "complexity", "", "brief, standard or detailed (default: the API's)")
	fs.BoolVar(&f.force, "force", false, "set force_time_travel")
}

func (f *requestFlags) request(question string) (client.SubmitRequest, error) {
	tps, err := ParseTimePoints(f.timePoints)
	if err != nil {
		return client.SubmitRequest{}, err
	}
	return client.SubmitRequest{
		Question:        question,
		TimePoints:      tps,
		Model:           f.model,
		Complexity:      f.complexity,
		ForceTimeTravel: f.force,
	}, nil
}

// ParseTimePoints parses a comma-separated list of time points: each is
// "YYYY-MM-DD", "today", or "YYYY-MM-DD=Label". An empty list is nil (the
// API's default time points). The API validates the dates.
func ParseTimePoints(s string) ([]client.TimePoint, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []client.TimePoint
	for _, part := range strings.Split(s, ",") {
		date, label, _ := strings.Cut(strings.TrimSpace(part), "=")
		date, label = strings.TrimSpace(date), strings.TrimSpace(label)
		if date == "" {
			return nil, fmt.Errorf("empty time point in %q", s)
		}
		out = append(out, client.TimePoint{Date: date, Label: label})
	}
	return out, nil
}

// parse parses flags that may come before, between or after positional
// arguments, and returns the positional ones.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("ttctl "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage of ttctl %s:\n", name)
		fs.PrintDefaults()
	}
	return fs
}

func ask(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := newFlagSet("ask", stderr)
	api := apiFlag(fs, getenv)
	var rf requestFlags
	rf.register(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return ExitUsage
	}
	question := strings.TrimSpace(strings.Join(pos, " "))
	if question == "" {
		fmt.Fprintln(stderr, "ttctl ask: a question is required")
		fs.Usage()
		return ExitUsage
	}
	req, err := rf.request(question)
	if err != nil {
		fmt.Fprintln(stderr, "ttctl ask:", err)
		return ExitUsage
	}
	// The key comes from the environment only: a flag would show it in
	// the process list.
	c := client.New(*api, client.WithAPIKey(getenv("TTCTL_API_KEY")))
	return run(ctx, c, timeTravel(c, req), stdout, stderr)
}

// apiFlag registers -api, whose default is TTCTL_API or the local API.
func apiFlag(fs *flag.FlagSet, getenv func(string) string) *string {
	def := getenv("TTCTL_API")
	if def == "" {
		def = "http://127.0.0.1:8080"
	}
	return fs.String("api", def, "API root URL (default from TTCTL_API)")
}

// ParseModels parses a comma-separated list of model names; blanks around
// names are dropped and an empty entry is an error. The API checks the
// count (2 to 8) and that each model is allowed.
func ParseModels(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []string
	for _, m := range strings.Split(s, ",") {
		m = strings.TrimSpace(m)
		if m == "" {
			return nil, fmt.Errorf("empty model name in %q", s)
		}
		out = append(out, m)
	}
	return out, nil
}

func ensembleCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := newFlagSet("ensemble", stderr)
	api := apiFlag(fs, getenv)
	models := fs.String("models", "", "comma-separated models that answer, 2 to 8 (required)")
	synth := fs.String("synthesis-model", "", "model that merges the answers (default: the service's)")
	cacheMode := fs.String("cache", "", "use or bypass (default: the API's, use)")
	pos, err := parse(fs, args)
	if err != nil {
		return ExitUsage
	}
	question := strings.TrimSpace(strings.Join(pos, " "))
	if question == "" {
		fmt.Fprintln(stderr, "ttctl ensemble: a question is required")
		fs.Usage()
		return ExitUsage
	}
	ms, err := ParseModels(*models)
	if err != nil {
		fmt.Fprintln(stderr, "ttctl ensemble:", err)
		return ExitUsage
	}
	if len(ms) == 0 {
		fmt.Fprintln(stderr, "ttctl ensemble: -models is required: name 2 to 8 models")
		fs.Usage()
		return ExitUsage
	}
	c := client.New(*api, client.WithAPIKey(getenv("TTCTL_API_KEY")))
	req := client.EnsembleRequest{Question: question, Models: ms, SynthesisModel: strings.TrimSpace(*synth), Cache: *cacheMode}
	return run(ctx, c, ensembleOf(c, req), stdout, stderr)
}

// submitFunc submits one job and returns the API's acceptance.
type submitFunc func(context.Context) (client.Accepted, error)

func timeTravel(c *client.Client, req client.SubmitRequest) submitFunc {
	return func(ctx context.Context) (client.Accepted, error) { return c.Submit(ctx, req) }
}

func ensembleOf(c *client.Client, req client.EnsembleRequest) submitFunc {
	return func(ctx context.Context) (client.Accepted, error) { return c.Ensemble(ctx, req) }
}

// run submits a job, renders its stream and summary, and returns the exit
// status. If ctx ends first, the job is canceled.
func run(ctx context.Context, c *client.Client, submit submitFunc, stdout, stderr io.Writer) int {
	acc, err := submit(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "ttctl: submit:", err)
		return ExitUsage
	}
	r := NewRenderer(stdout)
	_, err = c.Follow(ctx, acc.JobID, r.Handle)
	if err != nil {
		if ctx.Err() != nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if _, cerr := c.Cancel(cctx, acc.JobID); cerr != nil && !client.IsCode(cerr, "job_finished") {
				fmt.Fprintf(stderr, "\nttctl: interrupted; canceling job %s failed: %v\n", acc.JobID, cerr)
			} else {
				fmt.Fprintf(stderr, "\nttctl: interrupted; job %s canceled\n", acc.JobID)
			}
			return ExitFailed
		}
		fmt.Fprintf(stderr, "\nttctl: events of job %s: %v\n", acc.JobID, err)
		return ExitUsage
	}
	status := r.Final().Status
	v, err := c.Job(ctx, acc.JobID)
	if err != nil {
		fmt.Fprintf(stderr, "ttctl: job %s: %v\n", acc.JobID, err)
	} else {
		status = v.Status
		if err := r.Summary(v); err != nil {
			fmt.Fprintln(stderr, "ttctl:", err)
		}
	}
	return ExitCode(status)
}

func demo(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := newFlagSet("demo", stderr)
	question := fs.String("question", "", "the question (default \""+DefaultQuestion+"\")")
	workers := fs.Int("workers", 2, "worker processes")
	verbose := fs.Bool("v", false, "show the processes' logs")
	stay := fs.Bool("keep", false, "after the jobs, print the web page's URL and keep the service running until Ctrl-C")
	ensembleModels := fs.String("ensemble-models", "", "models of the ensemble job (default with the simulator: "+
		strings.Join(DemoEnsembleModels, ",")+"; with a real provider: no ensemble unless given)")
	var rf requestFlags
	rf.register(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return ExitUsage
	}
	q := strings.TrimSpace(*question)
	if q == "" {
		q = strings.TrimSpace(strings.Join(pos, " "))
	} else if len(pos) > 0 {
		fmt.Fprintln(stderr, "ttctl demo: give the question either with -question or as an argument")
		return ExitUsage
	}
	if q == "" {
		q = DefaultQuestion
	}
	req, err := rf.request(q)
	if err != nil {
		fmt.Fprintln(stderr, "ttctl demo:", err)
		return ExitUsage
	}
	ensModels, err := ParseModels(*ensembleModels)
	if err != nil {
		fmt.Fprintln(stderr, "ttctl demo:", err)
		return ExitUsage
	}

	real := getenv("OPENAI_API_KEY") != ""
	if ensModels == nil && !real {
		ensModels = DemoEnsembleModels
	}
	if real {
		base, model := getenv("OPENAI_BASE_URL"), getenv("LLM_MODEL")
		if base == "" {
			base = "the default OpenAI endpoint"
		}
		if model == "" {
			model = "the service's default model"
		}
		fmt.Fprintf(stdout, "Using a real LLM provider (OPENAI_API_KEY is set): %s, %s.\n", base, model)
	} else {
		fmt.Fprintln(stdout, "Using the LLM simulator: every answer below is SIMULATED, not real model output.")
		fmt.Fprintln(stdout, "(Set OPENAI_API_KEY, and optionally OPENAI_BASE_URL and LLM_MODEL, to use a real provider.)")
	}

	dir, err := os.MkdirTemp("", "ttctl-demo-")
	if err != nil {
		fmt.Fprintln(stderr, "ttctl demo:", err)
		return ExitUsage
	}
	keep := false
	defer func() {
		if keep {
			fmt.Fprintf(stderr, "ttctl demo: logs kept in %s\n", dir)
			return
		}
		_ = os.RemoveAll(dir)
	}()

	fmt.Fprintln(stdout, "Building api, worker and llmsim…")
	bin := filepath.Join(dir, "bin")
	if err := stack.Build(ctx, bin); err != nil {
		fmt.Fprintln(stderr, "ttctl demo:", err)
		return ExitUsage
	}
	opts := stack.Options{BinDir: bin, Dir: dir, Workers: max(*workers, 1), Sim: !real}
	if !real {
		opts.SimEnv = demoSimEnv
		// The simulator answers any model name; the api takes only the
		// models it is told a request may name. (With a real provider
		// LLM_ALLOWED_MODELS comes from this environment.)
		opts.APIEnv = map[string]string{"LLM_ALLOWED_MODELS": strings.Join(allowedForDemo(req.Model, ensModels), ",")}
	}
	if *verbose {
		opts.Output = stderr
	}
	what := fmt.Sprintf("redis, %s and the api", plural(opts.Workers, "worker"))
	if !real {
		what = fmt.Sprintf("redis, the LLM simulator, %s and the api", plural(opts.Workers, "worker"))
	}
	fmt.Fprintf(stdout, "Starting %s…\n", what)
	s, err := stack.Start(ctx, opts)
	if err != nil {
		fmt.Fprintln(stderr, "ttctl demo:", err)
		keep = true
		return ExitUsage
	}
	defer func() {
		fmt.Fprintln(stdout, "\nStopping the service…")
		s.Stop()
	}()
	fmt.Fprintf(stdout, "API at %s, Redis at %s.\n\n", s.APIURL, s.RedisURL)

	c := client.New(s.APIURL)
	fmt.Fprintln(stdout, "=== 1. Time travel: the answer as of each time point, what changed, and the story ===")
	code := run(ctx, c, timeTravel(c, req), stdout, stderr)
	if code == ExitOK {
		askAgain(ctx, c, req, stdout, stderr)
	}
	if code == ExitOK && len(ensModels) > 0 {
		fmt.Fprintf(stdout, "\n=== 2. Ensemble: %s answer at once, then a synthesis and an analysis ===\n", strings.Join(ensModels, ", "))
		ens := client.EnsembleRequest{Question: q, Models: ensModels}
		code = run(ctx, c, ensembleOf(c, ens), stdout, stderr)
	}
	if *stay && code == ExitOK {
		// The page and the api share the origin: open it in a browser.
		fmt.Fprintf(stdout, "\nOpen the web page: %s/\nThe service keeps running; press Ctrl-C to stop it.\n", s.APIURL)
		<-ctx.Done()
		return ExitOK
	}
	if code != ExitOK && !errors.Is(ctx.Err(), context.Canceled) {
		keep = true
		for _, p := range append([]*stack.Proc{s.API}, s.WorkerList()...) {
			fmt.Fprintf(stderr, "\n--- end of %s log ---\n%s\n", p.Name, lastLines(p.LogTail(), 20))
		}
	}
	return code
}

// allowedForDemo lists the models the demo's api lets requests name: the
// time-travel model asked for (if any) and the ensemble's. The api adds
// its default model itself.
func allowedForDemo(model string, ensemble []string) []string {
	var out []string
	if model != "" {
		out = append(out, model)
	}
	for _, m := range ensemble {
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out
}

// askAgain submits req once more, follows its job to the end quietly, and
// says how it was served: from the caches (the usual case for a question
// just answered), by joining a job, or afresh.
func askAgain(ctx context.Context, c *client.Client, req client.SubmitRequest, stdout, stderr io.Writer) {
	start := time.Now()
	acc, err := c.Submit(ctx, req)
	if err != nil {
		fmt.Fprintln(stderr, "ttctl demo: asking again:", err)
		return
	}
	if _, err := c.Follow(ctx, acc.JobID, func(client.Event) error { return nil }); err != nil {
		fmt.Fprintln(stderr, "ttctl demo: asking again:", err)
		return
	}
	took := time.Since(start)
	switch {
	case acc.Cached:
		fmt.Fprintf(stdout, "\nAsked the same question again: job %s was served from the caches, every event included, in %s, without calling the model.\n",
			acc.JobID, took.Round(100*time.Microsecond))
	default:
		fmt.Fprintf(stdout, "\nAsked the same question again: job %s reused %d cached snapshots and took %s.\n",
			acc.JobID, acc.CachedSnapshots, took.Round(time.Millisecond))
	}
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
