package tooling_test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/timetravel-ai/timetravel"

// The service's binaries and packages never import the tooling: the
// simulator, the harness and the suites stay out of what runs in
// production. (Tests of service packages may use them.)
func TestServiceDoesNotImportTooling(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, module+"/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	tooling := module + "/internal/tooling"
	tools := map[string]bool{ // the tooling's own commands
		module + "/cmd/bench": true, module + "/cmd/chaos": true,
		module + "/cmd/llmsim": true, module + "/cmd/ttctl": true,
	}
	checked := 0
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		pkg := fields[0]
		if strings.HasPrefix(pkg, tooling) || tools[pkg] {
			continue
		}
		checked++
		for _, imp := range fields[1:] {
			if strings.HasPrefix(imp, tooling) {
				t.Errorf("%s imports %s", pkg, imp)
			}
		}
	}
	if checked < 20 {
		t.Fatalf("only %d service packages listed: %s", checked, out)
	}
}
