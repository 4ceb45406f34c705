package ttctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/timetravel-ai/timetravel/internal/auth"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/redisx"
)

const keysUsage = `Usage:
  ttctl keys create -name NAME [LIMIT FLAGS]
  ttctl keys list
  ttctl keys revoke ID
  ttctl keys limits ID [LIMIT FLAGS]

LIMIT FLAGS: -submissions-per-minute N -running-jobs N -stored-jobs N
             -sse-connections N -tokens-per-day N (0: the server's default).
"limits" changes only the limits given, and shows them all.
ID is the id "create" and "list" show, or the whole key.
The keys live in the service's Redis, named by the service's variables:
REDIS_URL (default ` + config.DefaultRedisURL + `), or REDIS_SENTINEL_MASTER and
REDIS_SENTINEL_ADDRS, or REDIS_CLUSTER_ADDRS, with REDIS_USERNAME,
REDIS_PASSWORD and REDIS_TLS where they apply.
`

// runKeys runs `ttctl keys …`. Every failure, Redis' included, is ExitUsage.
func runKeys(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, keysUsage)
		return ExitUsage
	}
	var cmd func(context.Context, []string, func() (*auth.Keys, func(), error), io.Writer, io.Writer) int
	switch args[0] {
	case "create":
		cmd = keysCreate
	case "list":
		cmd = keysList
	case "revoke":
		cmd = keysRevoke
	case "limits":
		cmd = keysLimits
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, keysUsage)
		return ExitOK
	default:
		fmt.Fprintf(stderr, "ttctl keys: unknown command %q\n\n%s", args[0], keysUsage)
		return ExitUsage
	}
	// Connecting waits until the flags are known good, so that a usage
	// error is reported as such whether or not Redis is up.
	open := func() (*auth.Keys, func(), error) { return openKeys(getenv) }
	return cmd(ctx, args[1:], open, stdout, stderr)
}

// openKeys returns the key store in the service's Redis, configured by
// the same variables as the service (REDIS_URL, REDIS_SENTINEL_*,
// REDIS_CLUSTER_ADDRS, ...; see config.Redis), and a function that closes
// its connections.
func openKeys(getenv func(string) string) (*auth.Keys, func(), error) {
	cfg, err := config.LoadRedis(getenv)
	if err != nil {
		return nil, nil, err
	}
	rdb, err := redisx.NewClient(cfg, "ttctl", 0, false)
	if err != nil {
		return nil, nil, err
	}
	return auth.New(rdb), func() { _ = rdb.Close() }, nil
}

// limitFlags are the flags that set a key's limits.
type limitFlags struct {
	submissions, running, stored, sse int
	tokens                            int64
}

func (f *limitFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&f.submissions, "submissions-per-minute", 0, "job submissions per minute (0: the server's default)")
	fs.IntVar(&f.running, "running-jobs", 0, "jobs queued or running at once (0: the server's default)")
	fs.IntVar(&f.stored, "stored-jobs", 0, "jobs kept (0: the server's default)")
	fs.IntVar(&f.sse, "sse-connections", 0, "open event streams (0: the server's default)")
	fs.Int64Var(&f.tokens, "tokens-per-day", 0, "LLM tokens per day (0: the server's default)")
}

// apply returns l with the limits given on the command line of fs changed,
// and whether any was.
func (f *limitFlags) apply(fs *flag.FlagSet, l auth.Limits) (auth.Limits, bool) {
	changed := false
	fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "submissions-per-minute":
			l.SubmissionsPerMinute = f.submissions
		case "running-jobs":
			l.RunningJobs = f.running
		case "stored-jobs":
			l.StoredJobs = f.stored
		case "sse-connections":
			l.SSEConnections = f.sse
		case "tokens-per-day":
			l.TokensPerDay = f.tokens
		default:
			return // not a limit
		}
		changed = true
	})
	return l, changed
}

func keysCreate(ctx context.Context, args []string, open func() (*auth.Keys, func(), error), stdout, stderr io.Writer) int {
	fs := newFlagSet("keys create", stderr)
	name := fs.String("name", "", "what the key is for (required)")
	var lf limitFlags
	lf.register(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return ExitUsage
	}
	if len(pos) > 0 {
		fmt.Fprintln(stderr, "ttctl keys create: give the name with -name")
		return ExitUsage
	}
	if *name == "" {
		fmt.Fprintln(stderr, "ttctl keys create: -name is required")
		return ExitUsage
	}
	l, _ := lf.apply(fs, auth.Limits{})
	keys, done, err := open()
	if err != nil {
		fmt.Fprintln(stderr, "ttctl keys create:", err)
		return ExitUsage
	}
	defer done()
	key, k, err := keys.Create(ctx, *name, l)
	if err != nil {
		fmt.Fprintln(stderr, "ttctl keys create:", err)
		return ExitUsage
	}
	fmt.Fprintf(stdout, "Created API key %s (%s).\n\n", k.ID, k.Name)
	fmt.Fprintf(stdout, "  %s\n\n", key)
	fmt.Fprintln(stdout, "Store it now: it will not be shown again. Only its hash is kept.")
	fmt.Fprintf(stdout, "ID: %s\n", k.ID)
	return ExitOK
}

func keysList(ctx context.Context, args []string, open func() (*auth.Keys, func(), error), stdout, stderr io.Writer) int {
	fs := newFlagSet("keys list", stderr)
	pos, err := parse(fs, args)
	if err != nil {
		return ExitUsage
	}
	if len(pos) > 0 {
		fmt.Fprintln(stderr, "ttctl keys list: takes no arguments")
		return ExitUsage
	}
	keys, done, err := open()
	if err != nil {
		fmt.Fprintln(stderr, "ttctl keys list:", err)
		return ExitUsage
	}
	defer done()
	list, err := keys.List(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "ttctl keys list:", err)
		return ExitUsage
	}
	if len(list) == 0 {
		fmt.Fprintln(stdout, "No API keys.")
		return ExitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tCREATED\tSTATUS\tSUBMISSIONS/MIN\tRUNNING\tSTORED\tSSE\tTOKENS/DAY")
	for _, k := range list {
		status := "live"
		if !k.Live() {
			status = "revoked"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, k.Created.UTC().Format(time.RFC3339), status,
			limit(int64(k.Limits.SubmissionsPerMinute)), limit(int64(k.Limits.RunningJobs)),
			limit(int64(k.Limits.StoredJobs)), limit(int64(k.Limits.SSEConnections)), limit(k.Limits.TokensPerDay))
	}
	if err := tw.Flush(); err != nil {
		fmt.Fprintln(stderr, "ttctl keys list:", err)
		return ExitUsage
	}
	return ExitOK
}

// limit shows a limit, 0 being the server's default.
func limit(v int64) string {
	if v == 0 {
		return "default"
	}
	return strconv.FormatInt(v, 10)
}

// oneID parses a command that takes one key id and optional flags. A whole
// key is taken for its id, so that a key at hand can be revoked as it is.
func oneID(fs *flag.FlagSet, args []string, stderr io.Writer) (string, bool) {
	pos, err := parse(fs, args)
	if err != nil {
		return "", false
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "%s: give one key id\n", fs.Name())
		return "", false
	}
	if id, err := auth.ParseKey(pos[0]); err == nil {
		return id, true
	}
	if !keyID.MatchString(pos[0]) {
		// Not repeated: it may be a mistyped key.
		fmt.Fprintf(stderr, "%s: a key id is 16 lowercase hex digits (see ttctl keys list)\n", fs.Name())
		return "", false
	}
	return pos[0], true
}

var keyID = regexp.MustCompile(`^[0-9a-f]{16}$`)

// keyError explains err, naming the id when it is unknown.
func keyError(stderr io.Writer, cmd, id string, err error) {
	if errors.Is(err, auth.ErrUnknownKey) {
		fmt.Fprintf(stderr, "ttctl %s: no API key has the id %s (see ttctl keys list)\n", cmd, id)
		return
	}
	fmt.Fprintf(stderr, "ttctl %s: %v\n", cmd, err)
}

func keysRevoke(ctx context.Context, args []string, open func() (*auth.Keys, func(), error), stdout, stderr io.Writer) int {
	fs := newFlagSet("keys revoke", stderr)
	id, ok := oneID(fs, args, stderr)
	if !ok {
		return ExitUsage
	}
	keys, done, err := open()
	if err != nil {
		fmt.Fprintln(stderr, "ttctl keys revoke:", err)
		return ExitUsage
	}
	defer done()
	if err := keys.Revoke(ctx, id); err != nil {
		keyError(stderr, "keys revoke", id, err)
		return ExitUsage
	}
	fmt.Fprintf(stdout, "Revoked API key %s.\n", id)
	return ExitOK
}

func keysLimits(ctx context.Context, args []string, open func() (*auth.Keys, func(), error), stdout, stderr io.Writer) int {
	fs := newFlagSet("keys limits", stderr)
	var lf limitFlags
	lf.register(fs)
	id, ok := oneID(fs, args, stderr)
	if !ok {
		return ExitUsage
	}
	keys, done, err := open()
	if err != nil {
		fmt.Fprintln(stderr, "ttctl keys limits:", err)
		return ExitUsage
	}
	defer done()
	k, err := keys.Get(ctx, id)
	if err != nil {
		keyError(stderr, "keys limits", id, err)
		return ExitUsage
	}
	if l, changed := lf.apply(fs, k.Limits); changed {
		// Another admin changing the same key between Get and SetLimits
		// loses to this one; keys are rarely edited at once.
		if err := keys.SetLimits(ctx, id, l); err != nil {
			keyError(stderr, "keys limits", id, err)
			return ExitUsage
		}
		k.Limits = l
		fmt.Fprintf(stdout, "Limits of API key %s set:\n", id)
	} else {
		fmt.Fprintf(stdout, "Limits of API key %s:\n", id)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	for _, row := range []struct {
		name string
		v    int64
	}{
		{"submissions per minute", int64(k.Limits.SubmissionsPerMinute)},
		{"running jobs", int64(k.Limits.RunningJobs)},
		{"stored jobs", int64(k.Limits.StoredJobs)},
		{"SSE connections", int64(k.Limits.SSEConnections)},
		{"tokens per day", k.Limits.TokensPerDay},
	} {
		fmt.Fprintf(tw, "  %s\t%s\n", row.name, limit(row.v))
	}
	if err := tw.Flush(); err != nil {
		fmt.Fprintln(stderr, "ttctl keys limits:", err)
		return ExitUsage
	}
	return ExitOK
}
