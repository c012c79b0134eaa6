package api_test

import (
	"bytes"
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// Fuzz inputs choose a method and a path from these lists. "{r}" stands for
// the id of the last reservation the fuzzer created, so transitions reach
// live reservations.
var (
	fuzzMethods = []string{"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"}
	fuzzPaths   = []string{
		"/v1/reservations",                      // 0
		"/v1/reservations/{r}",                  // 1
		"/v1/reservations/{r}/confirm",          // 2
		"/v1/reservations/{r}/release",          // 3
		"/v1/reservations/{r}/extend",           // 4
		"/v1/pools/fz",                          // 5
		"/v1/pools/fz/adjust",                   // 6
		"/v1/pools/fz2",                         // 7
		"/v1/pools/fz2/adjust",                  // 8
		"/v1/pools/a%2Fb",                       // 9
		"/v1/pools/a%2Fb/adjust",                // 10
		"/v1/pools",                             // 11
		"/v1/pools?limit=2&after=fz",            // 12
		"/v1/pools/fz?consistency=stale",        // 13
		"/v1/reservations/r_1/confirm",          // 14
		"/v1/reservations/r_2/release",          // 15
		"/v1/reservations/r_1",                  // 16
		"/v1/health",                            // 17
		"/v1/cluster",                           // 18
		"/metrics",                              // 19
		"/v1/pools/new-pool",                    // 20
		"/v1/pools/%zz",                         // 21
		"/v1/pools/fz/bogus",                    // 22
		"/v1/reservations/r_01",                 // 23
		"/",                                     // 24
		"/v1/pools?limit=0",                     // 25
		"/v1/pools/fz?consistency=bogus",        // 26
		"/v1/reservations/{r}/extend?x=1",       // 27
		"/v1/pools/" + strings.Repeat("p", 129), // 28
		"/v1/pools/{k}",                         // 29: the key, raw, as a path segment
		"/v1/pools/{k}/adjust",                  // 30
		"/v1/reservations/{k}",                  // 31
		"/{k}",                                  // 32
	}
)

// fuzzServer drives one node's handler in process, no network.
type fuzzServer struct {
	n    *testNode
	last string // last reservation id created
}

func (s *fuzzServer) handle(method, path string, body []byte, key string) (int, []byte, string) {
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI(path)
	req.Header.SetContentType("application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	req.SetBody(body)
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, nil, nil)
	s.n.srv.Handle(&ctx)
	return ctx.Response.StatusCode(), append([]byte(nil), ctx.Response.Body()...), string(ctx.Response.Header.Peek("X-Holdfast-Node"))
}

type fuzzPool struct {
	ID        string `json:"id"`
	OnHand    int64  `json:"on_hand"`
	Held      int64  `json:"held"`
	Sold      int64  `json:"sold"`
	Available int64  `json:"available"`
	Claim     string `json:"claim"`
	UpdatedAt string `json:"updated_at"`
}

// pools lists every pool and asserts the pool invariants.
func (s *fuzzServer) pools(t testing.TB) map[string]fuzzPool {
	t.Helper()
	out := make(map[string]fuzzPool)
	for after := ""; ; {
		status, body, _ := s.handle("GET", "/v1/pools?limit=1000&after="+url.QueryEscape(after), nil, "")
		if status != 200 {
			t.Fatalf("list pools: %d %s", status, body)
		}
		var page struct {
			Pools     []fuzzPool `json:"pools"`
			NextAfter string     `json:"next_after"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatalf("list pools: %v: %s", err, body)
		}
		for _, p := range page.Pools {
			if p.Held < 0 || p.Sold < 0 || p.Available < 0 || p.Held+p.Sold+p.Available != p.OnHand {
				t.Fatalf("pool %s broken: on_hand %d held %d sold %d available %d", p.ID, p.OnHand, p.Held, p.Sold, p.Available)
			}
			if (p.Available == 0) != (p.Claim == "sold_out") {
				t.Fatalf("pool %s: available %d but claim %s", p.ID, p.Available, p.Claim)
			}
			out[p.ID] = p
		}
		if page.NextAfter == "" {
			return out
		}
		after = page.NextAfter
	}
}

// FuzzRequest feeds arbitrary requests to the handler of a live single-node
// cluster: no panic, no 5xx but 503, every error in the contract's shape,
// pools consistent after every request, and a keyed write answered the
// same way twice.
func FuzzRequest(f *testing.F) {
	s := &fuzzServer{n: startCluster(f, 1)[0], last: "r_1"}
	for _, c := range []struct{ path, body string }{
		{"/v1/pools/fz", `{"on_hand": 50, "per_buyer_limit": 5, "max_extensions": 3}`},
		{"/v1/pools/fz2", `{"on_hand": 3}`},
		{"/v1/pools/a%2Fb", `{"on_hand": 10, "hold_ttl_ms": 100, "max_hold_ttl_ms": 1000}`},
	} {
		if status, body, _ := s.handle("PUT", c.path, []byte(c.body), ""); status != 201 {
			f.Fatalf("setup %s: %d %s", c.path, status, body)
		}
	}

	const GET, POST, PUT, DELETE = 0, 1, 2, 3
	seeds := []struct {
		m, p      uint8
		body, key string
	}{
		{POST, 0, `{"buyer":"u1","lines":[{"pool":"fz","qty":1}]}`, ""},
		{POST, 0, `{"buyer":"u2","lines":[{"pool":"fz","qty":2},{"pool":"fz2","qty":1}],"ttl_ms":60000,"mode":"partial"}`, "seed-1"},
		{POST, 0, `{"buyer":"u3","lines":[{"pool":"a/b","qty":1}],"ttl_ms":1}`, ""},
		{POST, 0, `{"buyer":"u1","lines":[{"pool":"fz2","qty":4}]}`, "seed-2"},
		{POST, 0, `{"buyer":"u1","lines":[{"pool":"fz","qty":1}],"wait":true}`, ""},
		{GET, 1, ``, ""},
		{POST, 2, ``, "seed-3"},
		{POST, 3, `{}`, ""},
		{POST, 4, `{"ttl_ms": 30000}`, "seed-4"},
		{PUT, 5, `{"on_hand": 60, "per_buyer_limit": 5, "max_extensions": 3}`, ""},
		{POST, 6, `{"delta": -3}`, "seed-5"},
		{PUT, 7, `{"on_hand": 0}`, ""},
		{POST, 8, `{"delta": 1000000000000}`, ""},
		{POST, 10, `{"delta": 2}`, ""},
		{GET, 11, ``, ""},
		{GET, 12, ``, ""},
		{GET, 13, ``, ""},
		{POST, 14, ``, ""},
		{GET, 17, ``, ""},
		{GET, 18, ``, ""},
		{GET, 19, ``, ""},
		{PUT, 20, `{"on_hand": 1, "draw": {"opens_at": "2030-01-01T00:00:00Z", "closes_at": "2030-01-02T00:00:00Z", "seed": "s"}}`, ""},
		{PUT, 20, `{"on_hand": 1, "waitlist": {"enabled": false, "offer_ttl_ms": 5, "wait_ttl_ms": 6}}`, "seed-6"},
		{DELETE, 5, ``, ""},
		{GET, 21, ``, ""},
		{POST, 0, `{`, ""},
		{POST, 0, `null`, "bad key"},
		{POST, 6, `{"delta": 1} {}`, ""},
		{PUT, 29, `{"on_hand": 5}`, "pool-from-key"},
		{POST, 30, `{"delta": 1}`, "fz"},
		{GET, 31, ``, "r_1"},
		{GET, 32, ``, "metrics"},
	}
	for _, sd := range seeds {
		f.Add(sd.m, sd.p, []byte(sd.body), sd.key)
	}

	f.Fuzz(func(t *testing.T, m, p uint8, body []byte, key string) {
		method := fuzzMethods[int(m)%len(fuzzMethods)]
		path := strings.ReplaceAll(fuzzPaths[int(p)%len(fuzzPaths)], "{r}", s.last)
		path = strings.ReplaceAll(path, "{k}", key)
		prior := s.pools(t)
		status, resp, node := s.handle(method, path, body, key)
		if node != s.n.id {
			t.Fatalf("%s %s: X-Holdfast-Node %q", method, path, node)
		}
		switch {
		case status >= 200 && status < 300:
			if path != "/metrics" && !json.Valid(resp) {
				t.Fatalf("%s %s: %d with a body that is not JSON: %q", method, path, status, resp)
			}
			if method == "POST" && path == "/v1/reservations" && status == 201 {
				var r struct{ ID string }
				json.Unmarshal(resp, &r)
				s.last = r.ID
			}
		case status >= 400 && status < 500, status == 503:
			if _, err := errorShape(status, resp); err != nil {
				t.Fatalf("%s %s %q: %v", method, path, body, err)
			}
			if status != 503 { // a refusal changes nothing
				unchanged(t, method+" "+path, visible{pools: prior}, visible{pools: s.pools(t)})
			}
		default:
			t.Fatalf("%s %s %q: status %d: %s", method, path, body, status, resp)
		}
		before := s.pools(t)

		// A keyed write answers the same way the second time and changes
		// nothing: no pool config, on_hand or sold moves, and held can only
		// fall (holds expire meanwhile).
		if key != "" && (method == "POST" || method == "PUT") && status != 503 {
			status2, resp2, _ := s.handle(method, path, body, key)
			if status2 != status || !bytes.Equal(resp, resp2) {
				t.Fatalf("%s %s %q key %q: replay differs:\n%d %s\n%d %s", method, path, body, key, status, resp, status2, resp2)
			}
			after := s.pools(t)
			if len(after) != len(before) {
				t.Fatalf("%s %s %q key %q: replay created a pool", method, path, body, key)
			}
			for id, a := range after {
				b := before[id]
				if a.OnHand != b.OnHand || a.Sold != b.Sold || a.Held > b.Held || a.UpdatedAt != b.UpdatedAt {
					t.Fatalf("%s %s %q key %q: replay changed pool %s:\n%+v\n%+v", method, path, body, key, id, b, a)
				}
			}
		}
	})
}
