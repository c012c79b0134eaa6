package ctl

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/holdfast/holdfast/api"
	"github.com/holdfast/holdfast/auth"
	"github.com/holdfast/holdfast/engine"
	"github.com/holdfast/holdfast/raftstore"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startNode runs a one-node cluster in process and returns its API
// address; with tokens (role name -> token) the API requires them.
func startNode(t *testing.T, tokens map[auth.Role]string) string {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := engine.New(engine.Config{})
	httpAddr := freeAddr(t)
	n, err := raftstore.Open(raftstore.Config{ID: "n1", DataDir: t.TempDir(), RaftAddr: freeAddr(t), APIAddr: httpAddr,
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond, LeaderLeaseTimeout: 100 * time.Millisecond,
		Logger: quiet, RaftLog: io.Discard}, m)
	if err != nil {
		t.Fatal(err)
	}
	cfg := api.Config{Node: n, Alloc: m.Alloc, Carts: m, Logger: quiet}
	if tokens != nil {
		var lines []string
		for role, tok := range tokens {
			lines = append(lines, auth.FormatEntry(role, role.String()+"-test", []byte(tok)))
		}
		table, err := auth.Parse(strings.NewReader(strings.Join(lines, "\n") + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Auth = table
	}
	srv := api.New(cfg)
	ln, err := net.Listen("tcp", httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Shutdown(t.Context())
		n.Close()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, _, ok := n.Leader(); ok {
			return httpAddr
		}
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ctl runs holdfast ctl with an environment of its own.
func ctlRun(t *testing.T, envv map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, env{stdout: &out, stderr: &errOut, getenv: func(k string) string { return envv[k] }})
	return out.String(), errOut.String(), code
}

func mustCtl(t *testing.T, envv map[string]string, args ...string) string {
	t.Helper()
	out, errOut, code := ctlRun(t, envv, args...)
	if code != 0 {
		t.Fatalf("ctl %v: exit %d\n%s%s", args, code, out, errOut)
	}
	return out
}

// TestCtlPoolsAndReservations: ctl against a live node through
// HOLDFAST_ADDR: tables by default, JSON with --json, the calls' effects
// visible through the API.
func TestCtlPoolsAndReservations(t *testing.T) {
	addr := startNode(t, nil)
	e := map[string]string{"HOLDFAST_ADDR": addr} // host:port: http is assumed

	out := mustCtl(t, e, "pools", "create", "sneaker-42", "--on-hand", "10", "--per-buyer-limit", "1", "--waitlist")
	for _, want := range []string{"pool", "sneaker-42", "on_hand", "10", "available", "per_buyer_limit"} {
		if !strings.Contains(out, want) {
			t.Fatalf("pools create printed no %q:\n%s", want, out)
		}
	}
	mustCtl(t, e, "pools", "create", "tee", "--on-hand", "500")
	out = mustCtl(t, e, "pools", "adjust", "sneaker-42", "-3")
	if !regexpLine(out, "on_hand", "7") {
		t.Fatalf("adjust -3 printed:\n%s", out)
	}

	// A reservation made through the API, shown and released with ctl.
	c, _ := NewClient(addr, "", "")
	var r struct {
		ID string `json:"id"`
	}
	if err := c.do(t.Context(), request{method: "POST", path: "/v1/reservations", body: map[string]any{"buyer": "u-1", "lines": []any{map[string]any{"pool": "sneaker-42", "qty": 1}}}}, &r); err != nil {
		t.Fatal(err)
	}
	out = mustCtl(t, e, "reservations", "show", r.ID)
	if !regexpLine(out, "state", "active") || !strings.Contains(out, "sneaker-42") {
		t.Fatalf("reservations show:\n%s", out)
	}
	out = mustCtl(t, e, "reservations", "release", r.ID, "--json")
	var rel map[string]any
	if err := json.Unmarshal([]byte(out), &rel); err != nil || rel["state"] != "released" {
		t.Fatalf("release --json: %v\n%s", err, out)
	}

	// list: a table with a header, every pool; --json is the pools array.
	out = mustCtl(t, e, "pools", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "POOL") || !strings.Contains(lines[0], "HEAT") {
		t.Fatalf("pools list:\n%s", out)
	}
	out = mustCtl(t, e, "--json", "pools", "list")
	var list struct {
		Pools []struct {
			ID     string `json:"id"`
			OnHand int64  `json:"on_hand"`
			Demand struct {
				Heat string `json:"heat"`
			} `json:"demand"`
		} `json:"pools"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Pools) != 2 || list.Pools[0].Demand.Heat == "" {
		t.Fatalf("pools list --json: %v\n%s", err, out)
	}
	out = mustCtl(t, e, "pools", "show", "tee", "--json")
	if !strings.Contains(out, `"on_hand": 500`) {
		t.Fatalf("pools show --json:\n%s", out)
	}

	// cluster status
	out = mustCtl(t, e, "cluster", "status")
	if !strings.Contains(out, "leader n1") || !regexpLine(out, "n1", "leader") || !strings.Contains(out, "APPLIED") {
		t.Fatalf("cluster status:\n%s", out)
	}
	// The APPLIED column is the member's own answer: a number here.
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 6 && f[0] == "n1" {
			if _, err := strconv.ParseUint(f[5], 10, 64); err != nil {
				t.Fatalf("applied column %q:\n%s", f[5], out)
			}
		}
	}

	// Errors: the API's code on stderr, exit 1; usage mistakes exit 2.
	_, errOut, code := ctlRun(t, e, "pools", "show", "nope")
	if code != 1 || !strings.Contains(errOut, "404 not_found") {
		t.Fatalf("show missing pool: %d %s", code, errOut)
	}
	_, errOut, code = ctlRun(t, e, "pools", "adjust", "tee", "-600")
	if code != 1 || !strings.Contains(errOut, "409 invalid_state") {
		t.Fatalf("adjust below zero: %d %s", code, errOut)
	}
	for _, bad := range [][]string{{"pools"}, {"pools", "create", "x"}, {"frobnicate"}, {"pools", "adjust", "tee", "lots"}, {}} {
		if _, _, code := ctlRun(t, e, bad...); code != 2 {
			t.Errorf("ctl %v: exit %d, want 2", bad, code)
		}
	}
	// No node there: a clear error, exit 1.
	_, errOut, code = ctlRun(t, map[string]string{"HOLDFAST_ADDR": "http://" + freeAddr(t)}, "cluster", "status")
	if code != 1 || !strings.Contains(errOut, "connection refused") {
		t.Fatalf("no node: %d %s", code, errOut)
	}
}

// regexpLine reports whether a line starts with key and contains value.
func regexpLine(out, key, value string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), key) && strings.Contains(l, value) {
			return true
		}
	}
	return false
}

// TestCtlToken: HOLDFAST_TOKEN is sent as a bearer token; without it, or
// with a role too low, ctl reports the API's refusal.
func TestCtlToken(t *testing.T) {
	addr := startNode(t, map[auth.Role]string{auth.Admin: "hf_admin_token", auth.Read: "hf_read_token"})
	base := "http://" + addr
	_, errOut, code := ctlRun(t, map[string]string{"HOLDFAST_ADDR": base}, "pools", "list")
	if code != 1 || !strings.Contains(errOut, "401 unauthenticated") {
		t.Fatalf("no token: %d %s", code, errOut)
	}
	_, errOut, code = ctlRun(t, map[string]string{"HOLDFAST_ADDR": base, "HOLDFAST_TOKEN": "hf_read_token"}, "pools", "create", "p", "--on-hand", "1")
	if code != 1 || !strings.Contains(errOut, "403 permission_denied") {
		t.Fatalf("read token creating a pool: %d %s", code, errOut)
	}
	mustCtl(t, map[string]string{"HOLDFAST_ADDR": base, "HOLDFAST_TOKEN": "hf_admin_token"}, "pools", "create", "p", "--on-hand", "1")
	// --token beats the environment.
	out := mustCtl(t, map[string]string{"HOLDFAST_ADDR": base, "HOLDFAST_TOKEN": "wrong"}, "--token", "hf_read_token", "pools", "list")
	if !strings.Contains(out, "p ") {
		t.Fatalf("pools list with --token:\n%s", out)
	}
}

// TestCtlBackupRestore: ctl backup writes a verified file; ctl restore
// verifies it, refuses a damaged one, and prepares a data directory that a
// node starts from with the same state.
func TestCtlBackupRestore(t *testing.T) {
	addr := startNode(t, nil)
	e := map[string]string{"HOLDFAST_ADDR": addr}
	mustCtl(t, e, "pools", "create", "p", "--on-hand", "42")
	mustCtl(t, e, "pools", "adjust", "p", "8")
	file := filepath.Join(t.TempDir(), "b.backup")
	out := mustCtl(t, e, "backup", file)
	if !regexpLine(out, "file", file) || !regexpLine(out, "last_index", "") {
		t.Fatalf("backup printed:\n%s", out)
	}
	out = mustCtl(t, nil, "restore", file, "--json")
	var h raftstore.BackupHeader
	if err := json.Unmarshal([]byte(out), &h); err != nil || h.LastIndex == 0 || h.Format != raftstore.BackupFormat {
		t.Fatalf("restore --json: %v\n%s", err, out)
	}
	// "-": the same bytes on stdout, verified; the summary on stderr.
	stream, summary, code := ctlRun(t, e, "backup", "-")
	if code != 0 || !regexpLine(summary, "file", "-") {
		t.Fatalf("backup -: exit %d\n%s", code, summary)
	}
	if h, err := raftstore.VerifyBackup(strings.NewReader(stream)); err != nil || h.LastIndex == 0 {
		t.Fatalf("backup - wrote %d bytes that do not verify: %v", len(stream), err)
	}
	// "-" from a node sending damaged bytes: exit 1 with the reason, no
	// summary; a bad header stops the download at once.
	for name, body := range map[string]string{
		"flipped byte": stream[:len(stream)-1] + string(stream[len(stream)-1]^1),
		"bad header":   "not-a-backup\n" + stream,
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) }))
		out, errOut, code := ctlRun(t, map[string]string{"HOLDFAST_ADDR": srv.URL}, "backup", "-")
		srv.Close()
		if code != 1 || !strings.Contains(errOut, "does not verify") || regexpLine(errOut, "file", "-") {
			t.Fatalf("backup - of a %s: exit %d, %d bytes out\n%s", name, code, len(out), errOut)
		}
	}
	// Damaged: refused, exit 1.
	b, _ := os.ReadFile(file)
	b[len(b)-1] ^= 1
	bad := filepath.Join(t.TempDir(), "bad.backup")
	os.WriteFile(bad, b, 0o644)
	if _, errOut, code := ctlRun(t, nil, "restore", bad); code != 1 || !strings.Contains(errOut, "checksum") {
		t.Fatalf("damaged backup: %d %s", code, errOut)
	}
	// A failed backup leaves no file behind.
	if _, _, code := ctlRun(t, map[string]string{"HOLDFAST_ADDR": freeAddr(t)}, "backup", filepath.Join(t.TempDir(), "x")); code != 1 {
		t.Fatalf("backup with no node: exit %d", code)
	}

	dir, raftAddr := t.TempDir(), freeAddr(t)
	mustCtl(t, nil, "restore", file, "--data", dir, "--id", "n1", "--raft", raftAddr)
	m := engine.New(engine.Config{})
	n, err := raftstore.Open(raftstore.Config{ID: "n1", DataDir: dir, RaftAddr: raftAddr, APIAddr: "127.0.0.1:1",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RaftLog: io.Discard}, m)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	p, perr := m.Alloc.Pool("p")
	if perr != nil || p.Config.OnHand != 50 {
		t.Fatalf("restored pool: %+v %v", p, perr)
	}
}

// TestCtlHTTPS: an https:// address works, trusting HOLDFAST_CA, and the
// token travels as a bearer token.
func TestCtlHTTPS(t *testing.T) {
	var gotAuth string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth = r.Header.Get("Authorization")
		if r.URL.Path != "/v1/cluster" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"n1","state":"Leader","leader":"n1","term":2,"commit_index":9,"applied_index":9,"members":[{"id":"n1","raft_addr":"10.0.0.1:9080","api_addr":"10.0.0.1:8443","suffrage":"Voter","leader":true}]}`)
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	e := map[string]string{"HOLDFAST_ADDR": srv.URL, "HOLDFAST_TOKEN": "hf_x", "HOLDFAST_CA": ca}
	out := mustCtl(t, e, "cluster", "status")
	if !strings.Contains(out, "leader n1") || !regexpLine(out, "n1", "10.0.0.1:8443") || gotAuth != "Bearer hf_x" {
		t.Fatalf("https status: auth %q\n%s", gotAuth, out)
	}
	// Without the CA the server's certificate is not trusted.
	delete(e, "HOLDFAST_CA")
	if _, errOut, code := ctlRun(t, e, "cluster", "status"); code != 1 || !strings.Contains(errOut, "certificate") {
		t.Fatalf("untrusted certificate: %d %s", code, errOut)
	}
	if out, _, code := ctlRun(t, nil, "help"); code != 0 || !strings.Contains(out, "cluster transfer-leader") {
		t.Fatalf("help: %d %s", code, out)
	}
}

// TestCtlTokenCommands: token new prints a fresh token, token hash turns it
// (on stdin) into an --auth-file line the server's parser accepts; neither
// needs a server.
func TestCtlTokenCommands(t *testing.T) {
	tok, errOut, code := ctlRun(t, nil, "token", "new")
	tok = strings.TrimSpace(tok)
	if code != 0 || len(tok) < 32 {
		t.Fatalf("token new: %d %q %s", code, tok, errOut)
	}
	if again, _, _ := ctlRun(t, nil, "token", "new"); strings.TrimSpace(again) == tok {
		t.Fatal("token new printed the same token twice")
	}
	var out, stderr bytes.Buffer
	code = run([]string{"token", "hash", "checkout", "checkout-svc"}, env{stdin: strings.NewReader(tok + "\n"), stdout: &out, stderr: &stderr, getenv: func(string) string { return "" }})
	line := out.String()
	if code != 0 || !strings.HasPrefix(line, "checkout checkout-svc sha256:") || strings.Contains(line, tok) {
		t.Fatalf("token hash: %d %q %s", code, line, stderr.String())
	}
	if _, err := auth.Parse(strings.NewReader(line)); err != nil {
		t.Fatalf("the line does not parse: %v", err)
	}
	if _, _, code := ctlRun(t, nil, "token", "hash", "king", "x"); code != 2 {
		t.Fatalf("a bad role: exit %d, want 2", code)
	}
}
