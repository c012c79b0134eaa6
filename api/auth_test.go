package api_test

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast/holdfast/api"
	"github.com/holdfast/holdfast/auth"
	"github.com/holdfast/holdfast/engine"
	"github.com/holdfast/holdfast/raftstore"
)

// Tokens of the auth tests, one per role.
const (
	tokAdmin    = "hf_test-admin-token"
	tokCheckout = "hf_test-checkout-token"
	tokRead     = "hf_test-read-token"
)

func testTokens(t testing.TB) *auth.Table {
	t.Helper()
	tb, err := auth.Parse(strings.NewReader(strings.Join([]string{
		auth.FormatEntry(auth.Admin, "ops", []byte(tokAdmin)),
		auth.FormatEntry(auth.Checkout, "checkout-svc", []byte(tokCheckout)),
		auth.FormatEntry(auth.Read, "dashboard", []byte(tokRead)),
	}, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// startSecureCluster starts size nodes like startCluster, with cfg(i)
// adding to node i's api.Config and wrap(ln) wrapping its listener.
func startSecureCluster(t testing.TB, size int, cfg func(i int, c *api.Config), wrap func(net.Listener) net.Listener) []*testNode {
	t.Helper()
	nodes := make([]*testNode, size)
	var peers []raftstore.Peer
	for i := range nodes {
		nodes[i] = &testNode{id: fmt.Sprintf("n%d", i+1), dir: t.TempDir(), raftAddr: freeAddr(t), httpAddr: freeAddr(t)}
		peers = append(peers, raftstore.Peer{ID: nodes[i].id, Addr: nodes[i].raftAddr})
	}
	for i, n := range nodes {
		n.peers = peers
		n.machine = engine.New(engine.Config{})
		n.reg = prometheus.NewRegistry()
		var err error
		n.node, err = raftstore.Open(raftstore.Config{
			ID: n.id, DataDir: n.dir, RaftAddr: n.raftAddr, APIAddr: n.httpAddr, Peers: n.peers,
			HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
			LeaderLeaseTimeout: 150 * time.Millisecond, Logger: quietLogger(), RaftLog: io.Discard,
			Registerer: n.reg,
		}, n.machine)
		if err != nil {
			t.Fatalf("open %s: %v", n.id, err)
		}
		ln, err := net.Listen("tcp", n.httpAddr)
		if err != nil {
			t.Fatalf("listen %s: %v", n.id, err)
		}
		if wrap != nil {
			ln = wrap(ln)
		}
		c := api.Config{Node: n.node, Alloc: n.machine.Alloc, Carts: n.machine, Registry: n.reg, Logger: quietLogger(), RequestTimeout: 5 * time.Second}
		cfg(i, &c)
		n.srv = api.New(c)
		go n.srv.Serve(ln)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.stop(t)
		}
	})
	waitLeader(t, nodes, 10*time.Second)
	return nodes
}

func bearer(tok string) []string {
	if tok == "" {
		return nil
	}
	return []string{"Authorization", "Bearer " + tok}
}

// TestAuthRolesByEndpoint: every endpoint class against every kind of
// credential. Refusals are 401 unauthenticated (no, garbage or unknown
// token) or 403 permission_denied (a role too low) in the contract's
// error format, and change nothing; admin > checkout > read.
func TestAuthRolesByEndpoint(t *testing.T) {
	tb := testTokens(t)
	n := startSecureCluster(t, 1, func(_ int, c *api.Config) { c.Auth = tb }, nil)[0]

	// Fixtures, made with the admin and checkout tokens.
	wantOK := func(r response, status int) map[string]any {
		t.Helper()
		if r.status != status {
			t.Fatalf("fixture: %d %s", r.status, r.body)
		}
		return r.json(t)
	}
	wantOK(do(t, "PUT", n.url("/v1/pools/p"), `{"on_hand": 1000}`, bearer(tokAdmin)...), 201)
	buyers := 0
	res := func() string {
		buyers++
		return wantOK(do(t, "POST", n.url("/v1/reservations"), fmt.Sprintf(`{"buyer":"b%d","lines":[{"pool":"p","qty":1}]}`, buyers), bearer(tokCheckout)...), 201)["id"].(string)
	}
	cart := wantOK(do(t, "POST", n.url("/v1/carts"), `{"owner":"user:1"}`, bearer(tokCheckout)...), 201)["id"].(string)
	src := wantOK(do(t, "POST", n.url("/v1/carts"), `{"owner":"anon:1"}`, bearer(tokCheckout)...), 201)["id"].(string)
	line := `{"sku":"s","variant":"v","seller":"x","fulfillment":"f","pool":"p","qty":1}`
	wantOK(do(t, "POST", n.url("/v1/carts/"+cart+"/lines"), line, bearer(tokCheckout)...), 200)

	type endpoint struct {
		class        auth.Role
		method, path string
		body         string
	}
	endpoints := []endpoint{
		{auth.None, "GET", "/v1/health", ""},
		{auth.Read, "GET", "/metrics", ""},
		{auth.Read, "GET", "/v1/cluster", ""},
		{auth.Read, "GET", "/v1/pools", ""},
		{auth.Read, "GET", "/v1/pools/p", ""},
		{auth.Read, "GET", "/v1/pools/p?consistency=stale", ""},
		{auth.Read, "GET", "/v1/reservations/{res}", ""},
		{auth.Read, "GET", "/v1/carts/" + cart, ""},
		{auth.Read, "GET", "/v1/checkouts/co_999", ""},
		{auth.Read, "GET", "/v1/no-such-endpoint", ""},
		{auth.Checkout, "POST", "/v1/reservations", `{"buyer":"u-{i}","lines":[{"pool":"p","qty":1}]}`},
		{auth.Checkout, "POST", "/v1/reservations/{res}/extend", `{"ttl_ms": 1000}`},
		{auth.Checkout, "POST", "/v1/reservations/{res}/confirm", ""},
		{auth.Checkout, "POST", "/v1/reservations/{res}/release", ""},
		{auth.Checkout, "POST", "/v1/carts", `{"owner":"anon:x"}`},
		{auth.Checkout, "POST", "/v1/carts/" + cart + "/lines", line},
		{auth.Checkout, "PATCH", "/v1/carts/" + cart + "/lines/l_999", `{"qty": 2, "line_version": 1}`},
		{auth.Checkout, "DELETE", "/v1/carts/" + cart + "/lines/l_999?line_version=1", ""},
		{auth.Checkout, "POST", "/v1/carts/" + cart + "/merge", `{"source":"` + src + `","policy":"sum"}`},
		{auth.Checkout, "POST", "/v1/carts/" + cart + "/review", ""},
		{auth.Checkout, "POST", "/v1/carts/c_999/checkout", `{"expected_version": 1}`},
		{auth.Checkout, "POST", "/v1/checkouts/co_999/confirm", ""},
		{auth.Admin, "PUT", "/v1/pools/q{i}", `{"on_hand": 5}`},
		{auth.Admin, "POST", "/v1/pools/p/adjust", `{"delta": 1}`},
		{auth.Read, "GET", "/v1/cluster/members", ""},
		{auth.Admin, "GET", "/v1/backup", ""},
		{auth.Admin, "DELETE", "/v1/cluster/members/n9", ""},
	}
	creds := []struct {
		name   string
		header []string
		role   auth.Role // what the credential is worth; None: not authenticated
	}{
		{"no token", nil, auth.None},
		{"garbage header", []string{"Authorization", "garbage"}, auth.None},
		{"basic auth", []string{"Authorization", "Basic YWRtaW46YWRtaW4="}, auth.None},
		{"empty bearer", []string{"Authorization", "Bearer "}, auth.None},
		{"unknown token", bearer("hf_not-a-token"), auth.None},
		{"token prefix", bearer(tokAdmin[:len(tokAdmin)-1]), auth.None},
		{"read", bearer(tokRead), auth.Read},
		{"checkout", bearer(tokCheckout), auth.Checkout},
		{"admin", bearer(tokAdmin), auth.Admin},
		{"admin, lower-case scheme", []string{"Authorization", "bearer " + tokAdmin}, auth.Admin},
	}
	onHand := func() int64 {
		return num(t, do(t, "GET", n.url("/v1/pools/p"), "", bearer(tokRead)...).json(t), "on_hand")
	}
	i := 0
	for _, ep := range endpoints {
		for _, cr := range creds {
			i++
			path := strings.ReplaceAll(ep.path, "{i}", fmt.Sprint(i))
			body := strings.ReplaceAll(ep.body, "{i}", fmt.Sprint(i))
			if strings.Contains(path, "{res}") {
				path = strings.ReplaceAll(path, "{res}", res())
			}
			before := onHand()
			r := do(t, ep.method, n.url(path), body, cr.header...)
			name := fmt.Sprintf("%s %s with %s", ep.method, path, cr.name)
			switch {
			case ep.class == auth.None || (cr.role != auth.None && cr.role.Allows(ep.class)):
				if r.status == 401 || r.status == 403 || r.status >= 500 {
					t.Errorf("%s: refused, %d %s", name, r.status, r.body)
				}
			case cr.role == auth.None:
				if r.status != 401 || r.errCode() != "unauthenticated" || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("%s: %d %q (WWW-Authenticate %q), want 401 unauthenticated", name, r.status, r.body, r.header.Get("WWW-Authenticate"))
				}
			default:
				if r.status != 403 || r.errCode() != "permission_denied" {
					t.Errorf("%s: %d %s, want 403 permission_denied", name, r.status, r.body)
				}
			}
			if r.status == 401 || r.status == 403 {
				if _, err := errorShape(r.status, r.body); err != nil {
					t.Errorf("%s: error body: %v", name, err)
				}
				if r.header.Get("X-Holdfast-Node") != n.id {
					t.Errorf("%s: no X-Holdfast-Node on a refusal", name)
				}
				if after := onHand(); after != before {
					t.Errorf("%s: refused, yet on_hand moved %d -> %d", name, before, after)
				}
				if ep.method == "PUT" {
					if g := do(t, "GET", n.url(path), "", bearer(tokRead)...); g.status != 404 {
						t.Errorf("%s: refused, yet the pool exists: %d", name, g.status)
					}
				}
			}
		}
	}
	// The refusals were counted by reason.
	m := string(do(t, "GET", n.url("/metrics"), "", bearer(tokRead)...).body)
	for _, reason := range []string{"missing", "invalid", "forbidden"} {
		if !strings.Contains(m, `holdfast_auth_rejected_total{reason="`+reason+`"}`) {
			t.Errorf("metrics lack holdfast_auth_rejected_total{reason=%q}", reason)
		}
	}
}

// TestAuthForwarding: a follower checks the token before forwarding, and
// the leader checks it again: a forwarded request is never trusted for
// having come through a node, and a client cannot skip the check by
// claiming to be a forwarding node.
func TestAuthForwarding(t *testing.T) {
	good := testTokens(t)
	// A token the followers know but the leader does not: a stale file on
	// one node must not let a request through to the leader.
	const followerOnly = "hf_only-on-followers"
	followerTable, err := auth.Parse(strings.NewReader(auth.FormatEntry(auth.Admin, "stale", []byte(followerOnly)) + "\n" +
		auth.FormatEntry(auth.Admin, "ops", []byte(tokAdmin)) + "\n" + auth.FormatEntry(auth.Checkout, "co", []byte(tokCheckout))))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	tables := map[int]*switchable{}
	nodes := startSecureCluster(t, 3, func(i int, c *api.Config) {
		mu.Lock()
		defer mu.Unlock()
		tables[i] = &switchable{t: good}
		c.Auth = tables[i]
	}, nil)

	// arrange gives the current leader the good table and the followers
	// the stale one, and returns the leader and a follower.
	arrange := func() (leader, follower *testNode) {
		leader = waitLeader(t, nodes, 10*time.Second)
		for i, n := range nodes {
			if n == leader {
				tables[i].set(good)
			} else {
				tables[i].set(followerTable)
				follower = n
			}
		}
		return leader, follower
	}
	// check runs f against a fresh arrangement. A failure counts only if
	// leadership stayed put meanwhile (on a busy machine an election can
	// move it, and the roles of the nodes with it).
	check := func(name string, f func(leader, follower *testNode) error) {
		t.Helper()
		var err error
		for range 5 {
			leader, follower := arrange()
			term := leader.node.Status().Term
			if err = f(leader, follower); err == nil {
				return
			}
			if l := waitLeader(t, nodes, 10*time.Second); l == leader && l.node.Status().Term == term {
				break
			}
		}
		t.Fatalf("%s: %v", name, err)
	}
	headers := func(r response) string {
		return fmt.Sprintf("%d %s (node %q via %q)", r.status, r.body, r.header.Get("X-Holdfast-Node"), r.header.Get("X-Holdfast-Via"))
	}

	check("admin PUT through a follower", func(leader, follower *testNode) error {
		r := do(t, "PUT", follower.url("/v1/pools/fw"), `{"on_hand": 10}`, bearer(tokAdmin)...)
		if r.status != 201 && r.status != 200 || r.header.Get("X-Holdfast-Via") != follower.id {
			return fmt.Errorf("%s", headers(r))
		}
		return nil
	})
	check("checkout through a follower", func(leader, follower *testNode) error {
		r := do(t, "POST", follower.url("/v1/reservations"), `{"buyer":"b","lines":[{"pool":"fw","qty":1}]}`,
			append(bearer(tokCheckout), "Idempotency-Key", "fw-1")...)
		if r.status != 201 {
			return fmt.Errorf("%s", headers(r))
		}
		return nil
	})
	check("refused by the follower itself, never forwarded", func(leader, follower *testNode) error {
		r := do(t, "POST", follower.url("/v1/pools/fw/adjust"), `{"delta": 5}`, bearer(tokCheckout)...)
		if r.status != 403 || r.header.Get("X-Holdfast-Via") != "" || r.header.Get("X-Holdfast-Node") != follower.id {
			return fmt.Errorf("checkout token adjusting: %s", headers(r))
		}
		r = do(t, "POST", follower.url("/v1/pools/fw/adjust"), `{"delta": 5}`)
		if r.status != 401 || r.header.Get("X-Holdfast-Via") != "" {
			return fmt.Errorf("no token: %s", headers(r))
		}
		return nil
	})
	check("accepted by the follower, refused by the leader", func(leader, follower *testNode) error {
		r := do(t, "POST", follower.url("/v1/pools/fw/adjust"), `{"delta": 5}`, bearer(followerOnly)...)
		if r.status != 401 || r.errCode() != "unauthenticated" || r.header.Get("X-Holdfast-Via") != follower.id || r.header.Get("X-Holdfast-Node") != leader.id {
			return fmt.Errorf("%s", headers(r))
		}
		return nil
	})
	check("claiming to be a forwarding follower changes nothing", func(leader, follower *testNode) error {
		r := do(t, "POST", leader.url("/v1/pools/fw/adjust"), `{"delta": 5}`, "X-Holdfast-Forwarded-By", follower.id)
		if r.status != 401 {
			return fmt.Errorf("%s", headers(r))
		}
		return nil
	})
	check("the refused adjusts changed nothing", func(leader, _ *testNode) error {
		r := do(t, "GET", leader.url("/v1/pools/fw"), "", bearer(tokRead)...)
		if r.status != 200 {
			return fmt.Errorf("%s", headers(r))
		}
		if p := r.json(t); num(t, p, "on_hand") != 10 || num(t, p, "held") != 1 {
			t.Fatalf("refused adjusts changed the pool: %v", p)
		}
		return nil
	})
}

// switchable is an Authenticator whose table a test can swap.
type switchable struct {
	mu sync.Mutex
	t  *auth.Table
}

func (s *switchable) set(t *auth.Table) { s.mu.Lock(); s.t = t; s.mu.Unlock() }

func (s *switchable) Lookup(tok []byte) (auth.Entry, bool) {
	s.mu.Lock()
	t := s.t
	s.mu.Unlock()
	return t.Lookup(tok)
}

// syncBuffer is a log destination safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAuthRefusalLogIsRateLimited: a burst of refused requests makes one
// warn line, and the next line (a second later) says how many were not
// logged.
func TestAuthRefusalLogIsRateLimited(t *testing.T) {
	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	tb := testTokens(t)
	n := startSecureCluster(t, 1, func(_ int, c *api.Config) { c.Auth = tb; c.Logger = log }, nil)[0]
	start := time.Now()
	for i := range 200 {
		tok := "hf_guess-" + fmt.Sprint(i)
		if i%2 == 0 {
			tok = tokRead // and a role too low
		}
		if r := do(t, "PUT", n.url("/v1/pools/x"), `{"on_hand":1}`, bearer(tok)...); r.status != 401 && r.status != 403 {
			t.Fatalf("attempt %d: %d", i, r.status)
		}
	}
	// One line per started second at most (the burst takes well under a
	// second, unless the machine is very busy).
	lines, most := strings.Count(buf.String(), "request refused by auth"), int(time.Since(start)/time.Second)+1
	if lines < 1 || lines > most {
		t.Fatalf("200 refusals in %v made %d log lines, want 1 to %d:\n%s", time.Since(start), lines, most, buf.String())
	}
	if strings.Contains(buf.String(), "hf_guess") || strings.Contains(buf.String(), tokRead) {
		t.Fatal("a token was logged")
	}
	time.Sleep(1100 * time.Millisecond)
	do(t, "GET", n.url("/v1/pools"), "")
	if !strings.Contains(buf.String(), "suppressed_since_last=") || strings.Contains(lastLine(buf.String()), "suppressed_since_last=0") {
		t.Fatalf("the line after the burst does not count the suppressed refusals:\n%s", buf.String())
	}
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	return s[strings.LastIndexByte(s, '\n')+1:]
}
