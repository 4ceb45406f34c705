package cli

import (
	"bytes"
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/timetravel-ai/timetravel/internal/version"
)

const testUsage = "tool does things.\n\nUsage:\n  tool [flags]\n"

func newFlags() (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("tool", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs, fs.String("out", "default.txt", "where to write")
}

func TestAnswer(t *testing.T) {
	tests := []struct {
		name  string
		usage string
		args  []string
		want  bool
		out   string // exact output; "usage": the help
	}{
		{"no arguments", testUsage, nil, false, ""},
		{"other argument", testUsage, []string{"serve"}, false, ""},
		{"-version", testUsage, []string{"-version"}, true, version.Version + "\n"},
		{"--version", testUsage, []string{"--version"}, true, version.Version + "\n"},
		{"-version first, more after", testUsage, []string{"-version", "x"}, true, version.Version + "\n"},
		{"-version not first", testUsage, []string{"x", "-version"}, false, ""},
		{"-h", testUsage, []string{"-h"}, true, "usage"},
		{"-help", testUsage, []string{"-help"}, true, "usage"},
		{"--help", testUsage, []string{"--help"}, true, "usage"},
		{"help word is not a flag", testUsage, []string{"help"}, false, ""},
		{"-h without usage: left to the command", "", []string{"-h"}, false, ""},
		{"-version without usage", "", []string{"-version"}, true, version.Version + "\n"},
		{"single dash", testUsage, []string{"-"}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			c := Command{Name: "tool", Usage: tt.usage}
			if got := c.Answer(tt.args, &out); got != tt.want {
				t.Fatalf("Answer(%q) = %v, want %v", tt.args, got, tt.want)
			}
			want := tt.out
			if want == "usage" {
				var u bytes.Buffer
				c.WriteUsage(&u)
				want = u.String()
			}
			if out.String() != want {
				t.Fatalf("output %q, want %q", out.String(), want)
			}
		})
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		done    bool
		wantErr bool
		out     string // substring of the output; "" none at all
		value   string // -out after parsing
		rest    []string
	}{
		{"no arguments", nil, false, false, "", "default.txt", nil},
		{"flags and arguments", []string{"-out", "x.json", "a", "b"}, false, false, "", "x.json", []string{"a", "b"}},
		{"-help", []string{"-help"}, true, false, "-out string", "default.txt", nil},
		{"-h after a flag", []string{"-out", "x", "-h"}, true, false, "where to write", "x", nil},
		{"--help after a flag", []string{"-out", "x", "--help"}, true, false, "tool does things", "x", nil},
		{"-version", []string{"-version"}, true, false, version.Version, "default.txt", nil},
		{"unknown flag", []string{"-nope"}, false, true, "", "default.txt", nil},
		{"missing value", []string{"-out"}, false, true, "", "default.txt", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, out := newFlags()
			var errOut bytes.Buffer
			fs.SetOutput(&errOut)
			var stdout bytes.Buffer
			done, err := Command{Name: "tool", Usage: testUsage, Flags: fs}.Parse(tt.args, &stdout)
			if done != tt.done || (err != nil) != tt.wantErr {
				t.Fatalf("Parse(%q) = %v, %v; want done %v, error %v", tt.args, done, err, tt.done, tt.wantErr)
			}
			if (tt.out == "" && stdout.Len() > 0) || !strings.Contains(stdout.String(), tt.out) {
				t.Fatalf("stdout %q, want %q", stdout.String(), tt.out)
			}
			if *out != tt.value {
				t.Fatalf("-out = %q, want %q", *out, tt.value)
			}
			if !tt.done && !tt.wantErr && strings.Join(fs.Args(), " ") != strings.Join(tt.rest, " ") {
				t.Fatalf("arguments %q, want %q", fs.Args(), tt.rest)
			}
			// Errors go to the flag set's output with a hint; nothing else does.
			if hint := "Run 'tool -help' for usage."; tt.wantErr != strings.Contains(errOut.String(), hint) ||
				!tt.wantErr && errOut.Len() > 0 {
				t.Fatalf("flag output %q", errOut.String())
			}
		})
	}
}

func TestWriteUsage(t *testing.T) {
	fs, _ := newFlags()
	tests := []struct {
		name  string
		c     Command
		wants []string
	}{
		{"without flags", Command{Name: "tool", Usage: testUsage},
			[]string{testUsage + "\nFlags:\n  -help, -h, --help\n", "  -version, --version\n"}},
		{"usage without a final newline", Command{Name: "tool", Usage: "tool does things."},
			[]string{"tool does things.\n\nFlags:\n"}},
		{"with flags", Command{Name: "tool", Usage: testUsage, Flags: fs},
			[]string{testUsage + "\nFlags:\n  -out string\n", `(default "default.txt")`, "-help, -h, --help", "-version, --version"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			tt.c.WriteUsage(&b)
			for _, w := range tt.wants {
				if !strings.Contains(b.String(), w) {
					t.Fatalf("usage %q lacks %q", b.String(), w)
				}
			}
		})
	}
	// The flag set's own output is left as it was.
	if fs.Output() != io.Discard {
		t.Fatal("WriteUsage changed the flag set's output")
	}
}
