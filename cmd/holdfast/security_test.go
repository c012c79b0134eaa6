package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/holdfast/holdfast/auth"
	"github.com/holdfast/holdfast/internal/testcert"
)

// served is one in-process `holdfast serve`.
type served struct {
	code chan int
	mu   sync.Mutex
	log  strings.Builder
}

func (s *served) logText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

// startServe runs serve with args and waits for its ready line.
func startServe(t *testing.T, args ...string) *served {
	t.Helper()
	s := &served{code: make(chan int, 1)}
	pr, pw := io.Pipe()
	go func() {
		s.code <- run(append([]string{"serve"}, args...), io.Discard, pw)
		pw.Close()
	}()
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		found := false
		for sc.Scan() {
			s.mu.Lock()
			s.log.WriteString(sc.Text() + "\n")
			s.mu.Unlock()
			if !found && strings.Contains(sc.Text(), "holdfast ready") {
				found = true
				ready <- true
			}
		}
		if !found {
			ready <- false
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("serve exited without a ready line:\n%s", s.logText())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("no ready line within 20 s:\n%s", s.logText())
	}
	return s
}

// stopAll sends SIGTERM to this process (every running serve gets it) and
// waits for each to exit 0.
func stopAll(t *testing.T, ss ...*served) {
	t.Helper()
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for _, s := range ss {
		select {
		case c := <-s.code:
			if c != 0 {
				t.Errorf("exit code %d after SIGTERM:\n%s", c, s.logText())
			}
		case <-time.After(20 * time.Second):
			t.Fatal("serve did not stop on SIGTERM")
		}
	}
}

// TestServeRefusesNetworkWithoutAuth: without --auth-file the API binds
// only to loopback; any other --http is refused before anything starts.
func TestServeRefusesNetworkWithoutAuth(t *testing.T) {
	port := strings.Split(freeAddr(t), ":")[1]
	for _, addr := range []string{"0.0.0.0:" + port, ":" + port, "[::]:" + port, "example.com:" + port} {
		var stderr strings.Builder
		c := run([]string{"serve", "--data", t.TempDir(), "--http", addr, "--raft", freeAddr(t)}, io.Discard, &stderr)
		if c != 2 || !strings.Contains(stderr.String(), "not a loopback address") || !strings.Contains(stderr.String(), "--auth-file") {
			t.Errorf("--http %s without auth: exit %d, %q", addr, c, stderr.String())
		}
	}
	for _, addr := range []string{"127.0.0.1:1", "localhost:1", "[::1]:1", "127.0.0.2:1"} {
		if !isLoopback(addr) {
			t.Errorf("isLoopback(%q) = false", addr)
		}
	}
	// On loopback it starts, and says it is unauthenticated.
	s := startServe(t, "--data", t.TempDir(), "--http", freeAddr(t), "--raft", freeAddr(t))
	stopAll(t, s)
	if !strings.Contains(s.logText(), "no --auth-file") || !strings.Contains(s.logText(), "loopback only") {
		t.Fatalf("no start-up warning about running without auth:\n%s", s.logText())
	}
}

// TestServeSecurityFlagErrors: flags that only work together, and files
// that do not load, stop serve at once with exit code 2.
func TestServeSecurityFlagErrors(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t, "ca")
	cert, key := ca.Issue(t, "n1", "127.0.0.1").WriteFiles(t, dir, "n1")
	caFile := ca.WriteFile(t, dir, "ca.crt")
	badAuth := filepath.Join(dir, "bad-tokens")
	os.WriteFile(badAuth, []byte("admin ops plaintext-token\n"), 0o600)
	cases := map[string][]string{
		"cert without key":     {"--tls-cert", cert},
		"key without cert":     {"--tls-key", key},
		"tls-ca alone":         {"--tls-ca", caFile},
		"peer-ca alone":        {"--peer-ca", caFile},
		"peer cert, no ca":     {"--peer-cert", cert, "--peer-key", key},
		"bad auth file":        {"--auth-file", badAuth},
		"missing auth file":    {"--auth-file", filepath.Join(dir, "nope")},
		"key is not a cert":    {"--tls-cert", key, "--tls-key", key},
		"peer ca is not a PEM": {"--peer-ca", key, "--peer-cert", cert, "--peer-key", key},
	}
	for name, args := range cases {
		var stderr strings.Builder
		c := run(append([]string{"serve", "--data", t.TempDir(), "--http", freeAddr(t), "--raft", freeAddr(t)}, args...), io.Discard, &stderr)
		if c != 2 || !strings.HasPrefix(stderr.String(), "holdfast: ") {
			t.Errorf("%s: exit %d, %q", name, c, stderr.String())
		}
	}
}

func writeTokens(t *testing.T, path string, lines ...string) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil { // atomic, as an operator should
		t.Fatal(err)
	}
}

func httpsClient(ca *testcert.CA) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
}

func call(t *testing.T, c *http.Client, method, url, token, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// TestServeAuthTLSAndSIGHUP: a node with --auth-file and --tls-cert on a
// non-loopback address serves HTTPS only, wants tokens, and swaps its
// tokens on SIGHUP; a broken file on SIGHUP is logged and changes nothing.
func TestServeAuthTLSAndSIGHUP(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t, "api ca")
	cert, key := ca.Issue(t, "n1", "127.0.0.1").WriteFiles(t, dir, "api")
	tokens := filepath.Join(dir, "tokens")
	oldTok, newTok := "hf_old-admin-token", "hf_new-admin-token"
	writeTokens(t, tokens, "# first", auth.FormatEntry(auth.Admin, "ops", []byte(oldTok)))
	port := strings.Split(freeAddr(t), ":")[1]
	s := startServe(t, "--data", filepath.Join(dir, "data"), "--http", "0.0.0.0:"+port, "--raft", freeAddr(t),
		"--auth-file", tokens, "--tls-cert", cert, "--tls-key", key)
	base := "https://127.0.0.1:" + port
	c := httpsClient(ca)

	if code, _, _ := call(t, c, "GET", base+"/v1/health", "", ""); code != 200 {
		t.Fatalf("health without a token: %d", code)
	}
	if code, h, body := call(t, c, "PUT", base+"/v1/pools/p", "", `{"on_hand": 5}`); code != 401 || !strings.Contains(body, `"unauthenticated"`) || h.Get("WWW-Authenticate") == "" {
		t.Fatalf("PUT without a token: %d %s", code, body)
	}
	if code, _, body := call(t, c, "PUT", base+"/v1/pools/p", oldTok, `{"on_hand": 5}`); code != 201 {
		t.Fatalf("PUT with the admin token: %d %s", code, body)
	}
	// Plain HTTP on the TLS port gets no API answer.
	if resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://127.0.0.1:" + port + "/v1/health"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP answered on the TLS port")
		}
	}
	// A client that does not trust the CA refuses the server.
	if _, err := (&http.Client{Timeout: 2 * time.Second}).Get(base + "/v1/health"); err == nil {
		t.Fatal("the API certificate verified without its CA")
	}

	hup := func() {
		t.Helper()
		if err := syscall.Kill(syscall.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10 s:\n%s", what, s.logText())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	writeTokens(t, tokens, auth.FormatEntry(auth.Admin, "ops2", []byte(newTok)), auth.FormatEntry(auth.Read, "dash", []byte("hf_read")))
	hup()
	waitFor("the new token works after SIGHUP", func() bool {
		code, _, _ := call(t, c, "POST", base+"/v1/pools/p/adjust", newTok, `{"delta": 1}`)
		return code == 200
	})
	if code, _, _ := call(t, c, "POST", base+"/v1/pools/p/adjust", oldTok, `{"delta": 1}`); code != 401 {
		t.Fatalf("the removed token after SIGHUP: %d", code)
	}
	if code, _, _ := call(t, c, "POST", base+"/v1/pools/p/adjust", "hf_read", `{"delta": 1}`); code != 403 {
		t.Fatalf("a read token adjusting stock: %d", code)
	}

	writeTokens(t, tokens, "admin broken sha256:not-hex")
	hup()
	waitFor("the failed reload is logged", func() bool { return strings.Contains(s.logText(), "auth file reload failed") })
	if code, _, body := call(t, c, "POST", base+"/v1/pools/p/adjust", newTok, `{"delta": 1}`); code != 200 {
		t.Fatalf("a broken file on SIGHUP dropped the tokens in force: %d %s", code, body)
	}
	if strings.Contains(s.logText(), newTok) || strings.Contains(s.logText(), oldTok) {
		t.Fatal("a token reached the log")
	}

	// A renewed certificate (here from another CA) is served after SIGHUP.
	ca2 := testcert.NewCA(t, "renewed ca")
	renewed := ca2.Issue(t, "n1", "127.0.0.1")
	os.WriteFile(cert, renewed.CertPEM, 0o600)
	os.WriteFile(key, renewed.KeyPEM, 0o600)
	hup()
	c2 := httpsClient(ca2)
	waitFor("the renewed certificate is served after SIGHUP", func() bool {
		resp, err := c2.Get(base + "/v1/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	stopAll(t, s)
}

// TestServeClusterOverTLS: three processes' worth of serve, API over
// HTTPS with auth and Raft over mutual TLS: a write sent to a follower is
// forwarded to the leader over HTTPS, re-authorised there, and committed.
func TestServeClusterOverTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	dir := t.TempDir()
	apiCA, peerCA := testcert.NewCA(t, "api ca"), testcert.NewCA(t, "peer ca")
	apiCAFile, peerCAFile := apiCA.WriteFile(t, dir, "api-ca.crt"), peerCA.WriteFile(t, dir, "peer-ca.crt")
	tokens := filepath.Join(dir, "tokens")
	const tok = "hf_cluster-checkout"
	writeTokens(t, tokens, auth.FormatEntry(auth.Admin, "ops", []byte("hf_cluster-admin")), auth.FormatEntry(auth.Checkout, "co", []byte(tok)))
	var httpAddrs, raftAddrs, peers []string
	for i := 1; i <= 3; i++ {
		httpAddrs, raftAddrs = append(httpAddrs, freeAddr(t)), append(raftAddrs, freeAddr(t))
		peers = append(peers, fmt.Sprintf("n%d=%s", i, raftAddrs[i-1]))
	}
	start := make([]chan *served, 3)
	for i := range 3 {
		id := fmt.Sprintf("n%d", i+1)
		apiCert, apiKey := apiCA.Issue(t, id, "127.0.0.1").WriteFiles(t, dir, id+"-api")
		peerCert, peerKey := peerCA.Issue(t, id, "127.0.0.1").WriteFiles(t, dir, id+"-peer")
		args := []string{"--id", id, "--data", filepath.Join(dir, id), "--http", httpAddrs[i], "--raft", raftAddrs[i], "--peers", strings.Join(peers, ","),
			"--auth-file", tokens, "--tls-cert", apiCert, "--tls-key", apiKey, "--tls-ca", apiCAFile,
			"--peer-ca", peerCAFile, "--peer-cert", peerCert, "--peer-key", peerKey}
		start[i] = make(chan *served, 1)
		go func() { start[i] <- startServe(t, args...) }()
	}
	var nodes []*served
	for i := range 3 {
		select {
		case s := <-start[i]:
			nodes = append(nodes, s)
		case <-time.After(30 * time.Second):
			t.Fatal("a node did not start")
		}
	}
	c := httpsClient(apiCA)
	code, _, body := call(t, c, "PUT", "https://"+httpAddrs[0]+"/v1/pools/p", "hf_cluster-admin", `{"on_hand": 10}`)
	for try := 0; code == 503 && try < 20; try++ { // an election under way
		time.Sleep(100 * time.Millisecond)
		code, _, body = call(t, c, "PUT", "https://"+httpAddrs[0]+"/v1/pools/p", "hf_cluster-admin", `{"on_hand": 10}`)
	}
	if code != 200 && code != 201 {
		t.Fatalf("create pool: %d %s", code, body)
	}
	// One write to each node: two reach a follower and are forwarded (a
	// 503 during an election is retried with the same idempotency key).
	forwarded := 0
	for i := range 3 {
		var code int
		var h http.Header
		var body string
		for try := 0; try < 20; try++ {
			req, _ := http.NewRequest("POST", "https://"+httpAddrs[i]+"/v1/reservations", strings.NewReader(fmt.Sprintf(`{"buyer":"b%d","lines":[{"pool":"p","qty":1}]}`, i)))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Idempotency-Key", fmt.Sprintf("tls-%d", i))
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			code, h, body = resp.StatusCode, resp.Header, string(b)
			if code != 503 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if code != 201 {
			t.Fatalf("reserve through n%d: %d %s", i+1, code, body)
		}
		if h.Get("X-Holdfast-Via") != "" {
			forwarded++
		}
	}
	if forwarded == 0 {
		t.Fatal("no write was forwarded: the test did not reach a follower")
	}
	stopAll(t, nodes...)
}
