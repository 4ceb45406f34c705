package main

import (
	"fmt"
	"os"
)

// version is the release this binary was built from. The Dockerfiles set it
// at link time from their VERSION build argument:
//
//	go build -ldflags "-X main.version=v1.2.3" ...
var version = "dev"

// init answers a lone -version (or --version) argument with the version and
// exits before main runs, so that an image can be asked what it holds:
// `docker run --rm IMAGE -version`.
func init() {
	if len(os.Args) == 2 && (os.Args[1] == "-version" || os.Args[1] == "--version") {
		fmt.Println(version)
		os.Exit(0)
	}
}
