// Package e2e holds the end-to-end tests: the real api, worker, simulator and
// redis-server binaries started as processes, wired as in production, and
// driven through the public HTTP API.
package e2e
