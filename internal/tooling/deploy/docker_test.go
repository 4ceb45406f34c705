package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/timetravel-ai/timetravel/internal/config"
)

// images are the Dockerfiles at the repository root: the command each
// builds and the address it listens on by default.
var images = []struct {
	dockerfile, cmd string
	port            func(config.Config) string
}{
	{"Dockerfile.api", "api", func(c config.Config) string { return c.APIAddr }},
	{"Dockerfile.worker", "worker", func(c config.Config) string { return c.WorkerAddr }},
	{"Dockerfile.llmsim", "llmsim", func(config.Config) string { return ":8090" }},
}

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int
	cmd  string // upper case: FROM, RUN, ...
	rest string
}

// parseDockerfile splits a Dockerfile into instructions: comments and blank
// lines dropped, lines ending in a backslash joined to the next.
func parseDockerfile(path string) ([]instruction, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []instruction
	var cur strings.Builder
	start := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if cur.Len() == 0 {
			start = n
		} else {
			cur.WriteByte(' ')
		}
		if s, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(strings.TrimSpace(s))
			continue
		}
		cur.WriteString(line)
		cmd, rest, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{start, strings.ToUpper(cmd), strings.TrimSpace(rest)})
		cur.Reset()
	}
	if cur.Len() > 0 {
		return nil, fmt.Errorf("%s: ends in a continuation", path)
	}
	return out, sc.Err()
}

// shellWords splits a command line as a POSIX shell would for the simple
// commands the Dockerfiles use: words, single and double quotes, $VAR and
// ${VAR} expanded from vars outside single quotes. Anything else (command
// separators, substitutions, globs) is refused, so that the RUN line stays
// one plain command the test can run as it is.
func shellWords(s string, vars map[string]string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote byte
	expand := func(i int) (int, error) {
		name := ""
		j := i + 1
		if j < len(s) && s[j] == '{' {
			end := strings.IndexByte(s[j:], '}')
			if end < 0 {
				return 0, fmt.Errorf("unclosed ${ in %q", s)
			}
			name, j = s[j+1:j+end], j+end+1
		} else {
			for j < len(s) && (s[j] == '_' || s[j] >= 'A' && s[j] <= 'Z' || s[j] >= 'a' && s[j] <= 'z' || s[j] >= '0' && s[j] <= '9') {
				j++
			}
			name = s[i+1 : j]
		}
		v, ok := vars[name]
		if !ok || !regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`).MatchString(name) {
			return 0, fmt.Errorf("variable %q is not a build argument with a value", name)
		}
		cur.WriteString(v)
		return j, nil
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case quote == '\'':
			if c == '\'' {
				quote = 0
			} else {
				cur.WriteByte(c)
			}
			i++
		case c == '$':
			j, err := expand(i)
			if err != nil {
				return nil, err
			}
			inWord, i = true, j
		case quote == '"':
			if c == '"' {
				quote = 0
			} else if c == '\\' || c == '`' {
				return nil, fmt.Errorf("escapes and substitutions are not supported: %q", s)
			} else {
				cur.WriteByte(c)
			}
			i++
		case c == '\'' || c == '"':
			quote, inWord = c, true
			i++
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
			i++
		case strings.IndexByte(";&|<>()`\\*?[]{}~#", c) >= 0:
			return nil, fmt.Errorf("shell syntax %q is not supported in %q: keep the RUN line one plain command", c, s)
		default:
			cur.WriteByte(c)
			inWord = true
			i++
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unclosed quote in %q", s)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// goBuild is the go build command of a Dockerfile.
type goBuild struct {
	env    map[string]string
	args   []string // after "go"
	output string   // the -o argument
}

// dockerfileBuild finds the Dockerfile's one RUN go build and parses it with
// the given build arguments; ARG defaults fill the others.
func dockerfileBuild(t *testing.T, instrs []instruction, buildArgs map[string]string) goBuild {
	t.Helper()
	vars := map[string]string{}
	var builds []goBuild
	for _, in := range instrs {
		switch in.cmd {
		case "ARG":
			for _, a := range strings.Fields(in.rest) {
				name, def, _ := strings.Cut(a, "=")
				if v, ok := buildArgs[name]; ok {
					vars[name] = v
				} else if _, ok := vars[name]; !ok && def != "" {
					vars[name] = def
				}
			}
		case "RUN":
			if !strings.Contains(in.rest, "go build") {
				continue
			}
			words, err := shellWords(in.rest, vars)
			if err != nil {
				t.Fatalf("line %d: %v", in.line, err)
			}
			for len(words) > 0 && strings.HasPrefix(words[0], "--") {
				words = words[1:] // RUN flags: --mount=...
			}
			b := goBuild{env: map[string]string{}}
			for len(words) > 0 && regexp.MustCompile(`^[A-Z_][A-Z0-9_]*=`).MatchString(words[0]) {
				k, v, _ := strings.Cut(words[0], "=")
				b.env[k] = v
				words = words[1:]
			}
			if len(words) < 2 || words[0] != "go" || words[1] != "build" {
				t.Fatalf("line %d: want [VAR=value ...] go build ..., got %q", in.line, words)
			}
			b.args = words[1:]
			if i := slices.Index(b.args, "-o"); i > 0 && i+1 < len(b.args) {
				b.output = b.args[i+1]
			}
			builds = append(builds, b)
		}
	}
	if len(builds) != 1 {
		t.Fatalf("want one RUN go build, found %d", len(builds))
	}
	return builds[0]
}

// copyContext copies the repository into dir as docker build would send it:
// without what .dockerignore excludes. Only plain patterns are supported
// (no negation, no **), so that this matches what Docker does.
func copyContext(t *testing.T, root, dir string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") || strings.Contains(line, "**") {
			t.Fatalf(".dockerignore: pattern %q is not supported by this test", line)
		}
		patterns = append(patterns, strings.TrimPrefix(strings.TrimSuffix(line, "/"), "/"))
	}
	if !slices.Contains(patterns, ".git") {
		t.Fatal(".dockerignore must exclude .git (no VCS stamping; the version comes from VERSION)")
	}
	ignored := func(rel string) bool {
		for _, p := range patterns {
			if ok, _ := filepath.Match(p, rel); ok {
				return true
			}
		}
		return false
	}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil || rel == "." {
			return err
		}
		if ignored(filepath.ToSlash(rel)) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		dst := filepath.Join(dir, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		src, err := os.Open(path)
		if err != nil {
			return err
		}
		defer src.Close()
		out, err := os.Create(dst)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, src); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// goDirective is the go line of go.mod, e.g. "1.26.0".
func goDirective(t *testing.T, root string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	return string(m[1])
}

// TestDockerfilesBuildStaticBinaries runs each Dockerfile's go build, as it
// is written, on a copy of the build context, and checks the binary: static
// (no interpreter, no dynamic section), no build paths (-trimpath), the
// injected version. It also checks the rest of the Dockerfile: a distroless
// nonroot runtime, the binary copied from the path it was built to, the
// port the process listens on.
func TestDockerfilesBuildStaticBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries")
	}
	root := repoRoot(t)
	buildDir := t.TempDir()
	copyContext(t, root, buildDir)
	defaults, err := config.LoadFrom(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	goVersion := goDirective(t, root)

	for _, img := range images {
		t.Run(img.dockerfile, func(t *testing.T) {
			instrs, err := parseDockerfile(filepath.Join(root, img.dockerfile))
			if err != nil {
				t.Fatal(err)
			}
			checkDockerfileStages(t, instrs, img.cmd, addrPortString(t, img.port(defaults)), goVersion)

			version := fmt.Sprintf("v0.0.0-test.%d", time.Now().UnixNano())
			b := dockerfileBuild(t, instrs, map[string]string{
				"VERSION": version, "TARGETOS": "linux", "TARGETARCH": runtime.GOARCH,
			})
			if b.env["CGO_ENABLED"] != "0" {
				t.Errorf("go build runs with CGO_ENABLED=%q, want 0 (a static binary)", b.env["CGO_ENABLED"])
			}
			if b.env["GOOS"] != "linux" || b.env["GOARCH"] != runtime.GOARCH {
				t.Errorf("go build targets %s/%s, want the build arguments' linux/%s", b.env["GOOS"], b.env["GOARCH"], runtime.GOARCH)
			}
			if !slices.Contains(b.args, "-trimpath") {
				t.Error("go build lacks -trimpath")
			}
			i := slices.Index(b.args, "-ldflags")
			if i < 0 || i+1 >= len(b.args) {
				t.Fatal("go build has no -ldflags")
			}
			ld := strings.Fields(b.args[i+1])
			if !slices.Contains(ld, "-s") || !slices.Contains(ld, "-w") || !strings.Contains(b.args[i+1], "-X github.com/timetravel-ai/timetravel/internal/version.Version="+version) {
				t.Errorf("-ldflags %q, want -s -w -X .../internal/version.Version=${VERSION}", b.args[i+1])
			}
			if b.output != "/out/"+img.cmd || b.args[len(b.args)-1] != "./cmd/"+img.cmd {
				t.Errorf("go build -o %s %s, want -o /out/%s ./cmd/%s", b.output, b.args[len(b.args)-1], img.cmd, img.cmd)
			}

			// The same command, with -o into a temporary directory.
			bin := filepath.Join(t.TempDir(), img.cmd)
			args := slices.Clone(b.args)
			args[slices.Index(args, "-o")+1] = bin
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "go", args...)
			cmd.Dir = buildDir
			cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local") // as in the golang image
			for k, v := range b.env {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
			start := time.Now()
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			t.Logf("go %s: %s", strings.Join(b.args, " "), time.Since(start).Round(time.Millisecond))

			checkStatic(t, bin)
			data, err := os.ReadFile(bin)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{buildDir, root} {
				if bytes.Contains(data, []byte(p)) {
					t.Errorf("the binary holds the build path %s (-trimpath)", p)
				}
			}
			if runtime.GOOS == "linux" {
				out, err := exec.CommandContext(ctx, bin, "-version").Output()
				if err != nil {
					t.Fatalf("%s -version: %v", img.cmd, err)
				}
				if got := strings.TrimSpace(string(out)); got != version {
					t.Errorf("%s -version = %q, want the injected %q", img.cmd, got, version)
				}
			}
		})
	}
}

func addrPortString(t *testing.T, addr string) string {
	return fmt.Sprint(addrPort(t, addr))
}

// checkStatic fails unless bin is an ELF executable with no interpreter and
// no dynamic linking.
func checkStatic(t *testing.T, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s has a %s program header: not static", filepath.Base(bin), p.Type)
		}
	}
	for _, s := range []string{".interp", ".dynamic"} {
		if f.Section(s) != nil {
			t.Errorf("%s has a %s section: not static", filepath.Base(bin), s)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s links %v", filepath.Base(bin), libs)
	}
}

// checkDockerfileStages checks the stages around the build: the Go version
// of go.mod, a distroless nonroot runtime stage that copies the binary from
// where it was built and runs it, and the port it listens on.
func checkDockerfileStages(t *testing.T, instrs []instruction, cmd, port, goVersion string) {
	t.Helper()
	var froms []string
	var user, entrypoint, copyFrom, expose string
	var versionArg, healthcheck bool
	goArg := ""
	for _, in := range instrs {
		switch in.cmd {
		case "FROM":
			froms = append(froms, in.rest)
		case "ARG":
			if strings.HasPrefix(in.rest, "GO_VERSION=") {
				goArg = strings.TrimPrefix(in.rest, "GO_VERSION=")
			}
			versionArg = versionArg || strings.HasPrefix(in.rest, "VERSION")
		case "USER":
			user = in.rest
		case "ENTRYPOINT":
			entrypoint = in.rest
		case "COPY":
			if strings.HasPrefix(in.rest, "--from=") {
				copyFrom = in.rest
			}
		case "EXPOSE":
			expose = in.rest
		case "HEALTHCHECK":
			healthcheck = true
		}
	}
	if len(froms) != 2 {
		t.Fatalf("want two stages (build, runtime), have %d", len(froms))
	}
	if !strings.Contains(froms[0], "golang:${GO_VERSION}") || !strings.HasSuffix(froms[0], " AS build") {
		t.Errorf("build stage %q, want golang:${GO_VERSION} AS build", froms[0])
	}
	if mm := strings.Join(strings.SplitN(goVersion, ".", 3)[:2], "."); goArg != mm {
		t.Errorf("GO_VERSION %q, but go.mod says go %s", goArg, goVersion)
	}
	if !versionArg {
		t.Error("no ARG VERSION")
	}
	if froms[1] != "gcr.io/distroless/static-debian12:nonroot" {
		t.Errorf("runtime stage %q, want gcr.io/distroless/static-debian12:nonroot", froms[1])
	}
	if user != "nonroot:nonroot" {
		t.Errorf("USER %q, want nonroot:nonroot", user)
	}
	if healthcheck {
		t.Error("HEALTHCHECK in a distroless image: it has no shell or HTTP client to run one")
	}
	if want := fmt.Sprintf("--from=build /out/%s /%s", cmd, cmd); copyFrom != want {
		t.Errorf("COPY %q, want %q", copyFrom, want)
	}
	if want := fmt.Sprintf(`["/%s"]`, cmd); entrypoint != want {
		t.Errorf("ENTRYPOINT %s, want %s", entrypoint, want)
	}
	if expose != port {
		t.Errorf("EXPOSE %q, but %s listens on %s by default", expose, cmd, port)
	}
}

// compose is the part of the Compose file format docker-compose.yml uses;
// decoding is strict.
type compose struct {
	Name     string                    `json:"name"`
	Services map[string]composeService `json:"services"`
	Volumes  map[string]*struct{}      `json:"volumes"`
}

type composeService struct {
	Image   string   `json:"image"`
	Command []string `json:"command,omitempty"`
	Build   *struct {
		Context    string            `json:"context"`
		Dockerfile string            `json:"dockerfile"`
		Args       map[string]string `json:"args,omitempty"`
	} `json:"build,omitempty"`
	Environment     map[string]string `json:"environment,omitempty"`
	Ports           []string          `json:"ports,omitempty"`
	Volumes         []string          `json:"volumes,omitempty"`
	StopGracePeriod string            `json:"stop_grace_period,omitempty"`
	DependsOn       map[string]struct {
		Condition string `json:"condition"`
	} `json:"depends_on,omitempty"`
	Healthcheck *struct {
		Test     []string `json:"test"`
		Interval string   `json:"interval"`
		Timeout  string   `json:"timeout"`
		Retries  int      `json:"retries"`
	} `json:"healthcheck,omitempty"`
}

// composeDefaults replaces ${VAR:-default} with its default, as Compose
// does when VAR is unset.
func composeDefaults(s string) string {
	return regexp.MustCompile(`\$\{[A-Z_]+:-([^}]*)\}`).ReplaceAllString(s, "$1")
}

func TestComposeFile(t *testing.T) {
	root := repoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var c compose
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	for _, name := range []string{"redis", "llmsim", "worker", "api"} {
		if _, ok := c.Services[name]; !ok {
			t.Fatalf("no service %s", name)
		}
	}
	r := c.Services["redis"]
	cmd := " " + strings.Join(r.Command, " ") + " "
	if !strings.Contains(cmd, " --appendonly yes ") || !strings.Contains(cmd, " --maxmemory-policy noeviction ") {
		t.Errorf("redis command %q, want --appendonly yes and --maxmemory-policy noeviction", r.Command)
	}
	if r.Healthcheck == nil || !slices.Contains(r.Healthcheck.Test, "ping") {
		t.Error("redis has no health check")
	}
	if !slices.ContainsFunc(r.Volumes, func(v string) bool { return strings.HasSuffix(v, ":/data") }) {
		t.Error("redis keeps no volume on /data (its append-only file)")
	}

	for name, s := range c.Services {
		if s.Build == nil {
			continue
		}
		if s.Build.Context != "." {
			t.Errorf("%s: build context %q, want the repository root", name, s.Build.Context)
		}
		if _, err := os.Stat(filepath.Join(root, s.Build.Dockerfile)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if _, ok := s.Build.Args["VERSION"]; !ok {
			t.Errorf("%s: no VERSION build argument", name)
		}
	}

	for _, name := range []string{"api", "worker"} {
		s := c.Services[name]
		env := map[string]string{}
		for k, v := range s.Environment {
			env[k] = composeDefaults(v)
		}
		cfg, err := config.LoadFrom(env)
		if err != nil {
			t.Errorf("%s: its environment does not load: %v", name, err)
			continue
		}
		if d := s.DependsOn["redis"]; d.Condition != "service_healthy" {
			t.Errorf("%s: does not wait for Redis' health", name)
		}
		grace, err := time.ParseDuration(s.StopGracePeriod)
		if err != nil {
			t.Errorf("%s: stop_grace_period %q: %v", name, s.StopGracePeriod, err)
			continue
		}
		own := apiDrain
		if name == "worker" {
			own = cfg.ShutdownTimeout
		}
		if grace <= own {
			t.Errorf("%s: stop_grace_period %s is not above its own shutdown time %s", name, grace, own)
		}
	}
}
