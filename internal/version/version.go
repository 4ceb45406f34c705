// Package version holds the release a binary was built from.
package version

import (
	"fmt"
	"os"
)

// Version is the release. The Dockerfiles set it at link time from their
// VERSION build argument:
//
//	go build -ldflags "-X github.com/timetravel-ai/timetravel/internal/version.Version=v1.2.3" ...
var Version = "dev"

// IsFlag reports whether arg asks for the version: "-version" or
// "--version".
func IsFlag(arg string) bool { return arg == "-version" || arg == "--version" }

// HandleFlag answers a lone -version (or --version) argument with the
// version and exits, so that an image can be asked what it holds
// (`docker run --rm IMAGE -version`). Otherwise it returns at once.
// Package cli answers help as well; binaries call it first.
func HandleFlag() {
	if len(os.Args) == 2 && IsFlag(os.Args[1]) {
		fmt.Println(Version)
		os.Exit(0)
	}
}
