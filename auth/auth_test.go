package auth

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestRoleHierarchy(t *testing.T) {
	cases := []struct {
		have, need Role
		ok         bool
	}{
		{Admin, Admin, true}, {Admin, Checkout, true}, {Admin, Read, true}, {Admin, None, true},
		{Checkout, Admin, false}, {Checkout, Checkout, true}, {Checkout, Read, true},
		{Read, Admin, false}, {Read, Checkout, false}, {Read, Read, true},
		{None, Read, false}, {None, None, true},
	}
	for _, c := range cases {
		if got := c.have.Allows(c.need); got != c.ok {
			t.Errorf("%v.Allows(%v) = %v, want %v", c.have, c.need, got, c.ok)
		}
	}
}

func TestParseAndLookup(t *testing.T) {
	file := "# tokens\n\n" +
		FormatEntry(Admin, "ops", []byte("tok-admin")) + "\n" +
		"  " + strings.ReplaceAll(FormatEntry(Checkout, "co-svc", []byte("tok-checkout")), " ", "\t") + "  \n" +
		FormatEntry(Read, "dash", []byte("tok-read")) + "\n"
	tb, err := Parse(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if tb.Len() != 3 {
		t.Fatalf("%d entries", tb.Len())
	}
	for tok, want := range map[string]Entry{"tok-admin": {Role: Admin, Name: "ops"}, "tok-checkout": {Role: Checkout, Name: "co-svc"}, "tok-read": {Role: Read, Name: "dash"}} {
		e, ok := tb.Lookup([]byte(tok))
		if !ok || e.Role != want.Role || e.Name != want.Name {
			t.Errorf("Lookup(%q) = %+v %v", tok, e, ok)
		}
	}
	for _, bad := range []string{"", "tok-admi", "tok-admin ", "TOK-ADMIN", strings.Repeat("x", 10000)} {
		if e, ok := tb.Lookup([]byte(bad)); ok {
			t.Errorf("Lookup(%q) matched %+v", bad, e)
		}
	}
}

func TestParseRejects(t *testing.T) {
	good := FormatEntry(Read, "a", []byte("t1"))
	cases := map[string]string{
		"empty":           "",
		"only comments":   "# nothing\n\n",
		"two fields":      "read a\n",
		"four fields":     good + " extra\n",
		"unknown role":    strings.Replace(good, "read", "root", 1),
		"bad name":        strings.Replace(good, " a ", " a!b ", 1),
		"long name":       strings.Replace(good, " a ", " "+strings.Repeat("n", MaxNameBytes+1)+" ", 1),
		"no prefix":       strings.Replace(good, "sha256:", "", 1),
		"short hash":      good[:len(good)-2],
		"non-hex hash":    good[:len(good)-1] + "g",
		"long hash":       good + "00",
		"odd hash":        good + "0",
		"plain token":     "read a hf_secret",
		"duplicate name":  good + "\n" + FormatEntry(Admin, "a", []byte("t2")),
		"duplicate token": good + "\n" + FormatEntry(Admin, "b", []byte("t1")),
		"good then bad":   good + "\nadmin b sha256:zz\n",
	}
	for name, file := range cases {
		if _, err := Parse(strings.NewReader(file)); err == nil {
			t.Errorf("%s: accepted %q", name, file)
		}
	}
	if _, err := Parse(strings.NewReader(good + "\n" + strings.Repeat("#", MaxFileBytes))); err == nil {
		t.Error("a file over MaxFileBytes was accepted")
	}
}

// TestStoreReload: a reload swaps in a good file at once; a bad or missing
// file keeps the old table.
func TestStoreReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(FormatEntry(Read, "old", []byte("old-token")) + "\n")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	write(FormatEntry(Admin, "new", []byte("new-token")) + "\n")
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Lookup([]byte("old-token")); ok {
		t.Fatal("old token still valid after reload")
	}
	if e, ok := s.Lookup([]byte("new-token")); !ok || e.Role != Admin {
		t.Fatalf("new token: %+v %v", e, ok)
	}
	write("admin broken sha256:00\n")
	if err := s.Reload(); err == nil {
		t.Fatal("bad file reloaded without error")
	}
	if e, ok := s.Lookup([]byte("new-token")); !ok || e.Role != Admin {
		t.Fatal("a bad reload dropped the current table")
	}
	os.Remove(path)
	if err := s.Reload(); err == nil {
		t.Fatal("missing file reloaded without error")
	}
	if _, ok := s.Lookup([]byte("new-token")); !ok {
		t.Fatal("a failed reload dropped the current table")
	}
	if _, err := Open(path); err == nil {
		t.Fatal("Open of a missing file succeeded")
	}
}

func TestNewToken(t *testing.T) {
	a, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewToken()
	if a == b || !strings.HasPrefix(a, "hf_") || len(a) != 3+43 {
		t.Fatalf("tokens %q %q", a, b)
	}
	tb, err := Parse(strings.NewReader(FormatEntry(Checkout, "svc", []byte(a))))
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := tb.Lookup([]byte(a)); !ok || e.Role != Checkout {
		t.Fatal("a generated token does not match its own entry")
	}
}

// BenchmarkLookup: the cost auth adds to a request (hash + compare with
// every entry), by table size.
func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{3, 100, 1000} {
		var lines []string
		for i := range n {
			lines = append(lines, FormatEntry(Read, "t"+strconv.Itoa(i), []byte("hf_token-"+strconv.Itoa(i))))
		}
		tb, err := Parse(strings.NewReader(strings.Join(lines, "\n")))
		if err != nil {
			b.Fatal(err)
		}
		tok := []byte("hf_token-" + strconv.Itoa(n-1))
		b.Run(strconv.Itoa(n)+"_tokens", func(b *testing.B) {
			for b.Loop() {
				if _, ok := tb.Lookup(tok); !ok {
					b.Fatal("not found")
				}
			}
		})
	}
}

// FuzzParse: no input panics the parser, and a file it accepts says the
// same thing when written back out line by line.
func FuzzParse(f *testing.F) {
	f.Add(FormatEntry(Admin, "ops", []byte("t1")) + "\n# c\n\n" + FormatEntry(Read, "r", []byte("t2")))
	f.Add("admin a sha256:" + strings.Repeat("0", 64))
	f.Add("read\tx\tsha256:" + strings.Repeat("f", 64) + "\r\n")
	f.Add("checkout n sha256:zz")
	f.Fuzz(func(t *testing.T, file string) {
		tb, err := Parse(strings.NewReader(file))
		if err != nil {
			return
		}
		var lines []string
		for _, e := range tb.entries {
			lines = append(lines, e.Role.String()+" "+e.Name+" sha256:"+hex.EncodeToString(e.Hash[:]))
		}
		again, err := Parse(strings.NewReader(strings.Join(lines, "\n")))
		if err != nil {
			t.Fatalf("written back, the file does not parse: %v", err)
		}
		if len(again.entries) != len(tb.entries) {
			t.Fatalf("%d entries became %d", len(tb.entries), len(again.entries))
		}
		for i := range tb.entries {
			if again.entries[i] != tb.entries[i] {
				t.Fatalf("entry %d: %+v became %+v", i, tb.entries[i], again.entries[i])
			}
			if got, ok := again.byHash[tb.entries[i].Hash]; !ok || got != i {
				t.Fatalf("entry %d not found by its hash", i)
			}
		}
	})
}
