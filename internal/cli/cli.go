// Package cli answers the two requests every binary of the service honours
// before it does anything else: help (-help, -h or --help) prints the
// command's usage and version (-version or --version) prints the release of
// package version, each on standard output, after which the process exits
// with status 0. Nothing is read from the environment, no file is opened and
// no connection is made before the answer.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/timetravel-ai/timetravel/internal/version"
)

// Command describes one binary for its help.
type Command struct {
	// Name is the binary's name.
	Name string
	// Usage is the help text: what the command does, how to call it and
	// the environment it reads (or where the README lists it). Empty: the
	// command answers help itself, and Answer answers the version only.
	Usage string
	// Flags, when set, are the command's flags: the help lists them after
	// Usage, and Parse parses them.
	Flags *flag.FlagSet
}

// IsHelp reports whether arg asks for help: "-h", "-help" or "--help".
func IsHelp(arg string) bool { return arg == "-h" || arg == "-help" || arg == "--help" }

// Answer answers a help or version request in the first of args (the
// arguments after the program name), whatever follows it, on stdout, and
// reports whether it did. It writes nothing otherwise.
func (c Command) Answer(args []string, stdout io.Writer) bool {
	if len(args) == 0 {
		return false
	}
	switch {
	case version.IsFlag(args[0]):
		fmt.Fprintln(stdout, version.Version)
		return true
	case IsHelp(args[0]) && c.Usage != "":
		c.WriteUsage(stdout)
		return true
	}
	return false
}

// Handle answers a help or version request in the process's first
// argument on standard output and exits with status 0; otherwise it
// returns at once, having done nothing. Call it first thing in main.
func (c Command) Handle() {
	if c.Answer(os.Args[1:], os.Stdout) {
		os.Exit(0)
	}
}

// Parse answers a help or version request in the first of args like
// Answer, and otherwise parses args with c.Flags; a help flag among them
// (flag.ErrHelp) is answered too. done reports an answered request: the
// command should then exit with status 0. A parse error is returned (the
// flag package has written it to the flag set's output, and Parse a hint
// to run -help after it). Parse replaces c.Flags.Usage.
func (c Command) Parse(args []string, stdout io.Writer) (done bool, err error) {
	if c.Answer(args, stdout) {
		return true, nil
	}
	fs := c.Flags
	fs.Usage = func() {} // a help flag is answered below, an error gets a hint
	err = fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		c.WriteUsage(stdout)
		return true, nil
	case err != nil:
		fmt.Fprintf(fs.Output(), "Run '%s -help' for usage.\n", c.Name)
	}
	return false, err
}

// WriteUsage writes the help to w: Usage, then the flags with their
// defaults, -help and -version included.
func (c Command) WriteUsage(w io.Writer) {
	io.WriteString(w, c.Usage)
	if !strings.HasSuffix(c.Usage, "\n") {
		io.WriteString(w, "\n")
	}
	io.WriteString(w, "\nFlags:\n")
	if c.Flags != nil {
		out := c.Flags.Output()
		c.Flags.SetOutput(w)
		c.Flags.PrintDefaults()
		c.Flags.SetOutput(out)
	}
	fmt.Fprint(w, "  -help, -h, --help\n    \tprint this help and exit\n  -version, --version\n    \tprint the version and exit\n")
}
