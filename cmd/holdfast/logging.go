package main

import (
	"fmt"
	"io"
	"log/slog"
)

// newLogger is serve's logger: --log-level filters, --log-format picks
// slog's key=value text (the default, for people) or one JSON object per
// line (for log shippers). See docs/operations.md, "Logs".
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("bad --log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("bad --log-format %q: want text or json", format)
}
