package redisx

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// Logger carries go-redis' own log lines (pool and connection notices it
// would otherwise print as plain text on stderr) into a slog.Logger. Install
// it once at process start with redis.SetLogger(redisx.NewLogger(log)); the
// setting is global to the process, and covers every client, asynq's
// included.
//
// Each line becomes one record at level Warn (go-redis gives no level, and
// logs only what deserves attention at its default log level) with the
// message as go-redis formatted it, less any trailing newline, and the
// attribute logger=go-redis. The record carries the context go-redis passed,
// so a handler that reads the context (trace ids) sees it.
type Logger struct {
	log *slog.Logger
}

// NewLogger returns a Logger that writes to log.
func NewLogger(log *slog.Logger) *Logger {
	return &Logger{log: log.With("logger", "go-redis")}
}

// Printf logs one line of go-redis; it implements go-redis' logging
// interface (redis.SetLogger).
func (l *Logger) Printf(ctx context.Context, format string, v ...any) {
	if ctx == nil {
		ctx = context.Background()
	}
	if !l.log.Enabled(ctx, slog.LevelWarn) {
		return
	}
	l.log.Log(ctx, slog.LevelWarn, strings.TrimRight(fmt.Sprintf(format, v...), "\n"))
}
