package ctl

import (
	"errors"
	"strings"
	"testing"

	"github.com/holdfast/holdfast/auth"
)

// TestTokenNewAndHash: a generated token, hashed into a file line, is
// accepted by the server's parser with its role; bad input is a usage
// error.
func TestTokenNewAndHash(t *testing.T) {
	var out strings.Builder
	if err := tokenCmd([]string{"new"}, nil, &out); err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(out.String())
	out.Reset()
	if err := tokenCmd([]string{"hash", "checkout", "checkout-svc"}, strings.NewReader(tok+"\n"), &out); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), tok) {
		t.Fatal("the file line holds the token itself")
	}
	tb, err := auth.Parse(strings.NewReader(out.String()))
	if err != nil {
		t.Fatalf("%q: %v", out.String(), err)
	}
	if e, ok := tb.Lookup([]byte(tok)); !ok || e.Role != auth.Checkout || e.Name != "checkout-svc" {
		t.Fatalf("lookup: %+v %v", e, ok)
	}
	var ue usageError
	for _, args := range [][]string{{}, {"bogus"}, {"new", "x"}, {"hash"}, {"hash", "root", "n"}, {"hash", "read", "bad name!"}} {
		if err := tokenCmd(args, strings.NewReader(tok), &out); !errors.As(err, &ue) {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
	}
	if err := tokenCmd([]string{"hash", "read", "n"}, strings.NewReader("short\n"), &out); !errors.As(err, &ue) {
		t.Errorf("a short token: %v", err)
	}
	if err := tokenCmd([]string{"hash", "read", "n"}, strings.NewReader(""), &out); !errors.As(err, &ue) {
		t.Errorf("no token: %v", err)
	}
}
