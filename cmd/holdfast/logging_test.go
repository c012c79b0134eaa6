package main

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
)

func TestNewLogger(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger(&buf, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("hidden")
	log.Info("leader elected", "leader", "n2", "term", 3)
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil || rec["msg"] != "leader elected" || rec["leader"] != "n2" || rec["level"] != "INFO" {
		t.Fatalf("json line %q: %v", buf.String(), err)
	}

	buf.Reset()
	if log, err = newLogger(&buf, "warn", "text"); err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("no leader", "for_ms", 5000)
	if got := buf.String(); !strings.Contains(got, `level=WARN msg="no leader" for_ms=5000`) || strings.Contains(got, "hidden") {
		t.Fatalf("text output %q", got)
	}

	for _, c := range [][2]string{{"info", "xml"}, {"loud", "text"}} {
		if _, err := newLogger(io.Discard, c[0], c[1]); err == nil {
			t.Fatalf("level %q format %q accepted", c[0], c[1])
		}
	}
	var stderr strings.Builder
	if code := run([]string{"serve", "--log-format", "xml"}, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), "--log-format") {
		t.Fatalf("serve --log-format xml: exit %d, %q", code, stderr.String())
	}
}
