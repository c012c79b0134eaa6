package api_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
)

// FuzzRoutes complements FuzzRequest: it reaches every route, carts and
// checkouts included, and lets the fuzzer choose path segments and query
// values (limit, after, consistency, line_version) as well as bodies. The
// property, on a live single-node cluster: no panic, no 5xx but 503, every
// refusal a 4xx in the contract's error format, and a refused request
// changes no visible state (pools, the two carts, the last checkout).
//
// Path templates: {c} is the fuzzer's current cart, {c2} a second cart
// (a merge source), {l} a line of {c}, {v} that line's version, {co} the
// last checkout, {r} the last reservation, {a} the fuzz argument raw and
// {qa} the fuzz argument query-escaped.
var fuzzRoutePaths = []string{
	"/v1/carts",                                 // 0
	"/v1/carts/{c}",                             // 1
	"/v1/carts/{c}?consistency={qa}",            // 2
	"/v1/carts/{c}/lines",                       // 3
	"/v1/carts/{c}/lines/{l}",                   // 4
	"/v1/carts/{c}/lines/{l}?line_version={v}",  // 5
	"/v1/carts/{c}/lines/{l}?line_version={qa}", // 6
	"/v1/carts/{c}/merge",                       // 7
	"/v1/carts/{c}/review",                      // 8
	"/v1/carts/{c}/checkout",                    // 9
	"/v1/checkouts/{co}",                        // 10
	"/v1/checkouts/{co}/confirm",                // 11
	"/v1/carts/{a}",                             // 12
	"/v1/carts/{a}/lines",                       // 13
	"/v1/carts/{c}/lines/{a}",                   // 14
	"/v1/checkouts/{a}",                         // 15
	"/v1/checkouts/{a}/confirm",                 // 16
	"/v1/pools?limit={qa}",                      // 17
	"/v1/pools?after={qa}",                      // 18
	"/v1/pools?limit={qa}&after={qa}",           // 19
	"/v1/pools/fc?consistency={qa}",             // 20
	"/v1/reservations/{r}?consistency={qa}",     // 21
	"/v1/pools/{a}",                             // 22
	"/v1/pools/{a}/adjust",                      // 23
	"/v1/reservations",                          // 24
	"/v1/reservations/{a}/confirm",              // 25
	"/v1/reservations/{r}/release",              // 26
	"/v1/reservations/{r}/extend",               // 27
	"/v1/reservations/{r}/confirm",              // 28
	"/v1/pools/fc",                              // 29
	"/v1/pools/fc/adjust",                       // 30
	"/v1/carts/{c2}/merge",                      // 31
	"/v1/carts/{c}/{a}",                         // 32
	"/v1/{a}",                                   // 33
	"/v1/carts/{c}?{a}",                         // 34
	"/v1/pools/fc?{a}",                          // 35
}

// routeFuzzer drives one node and tracks the entities the fuzzer works on.
type routeFuzzer struct {
	fuzzServer
	cart, cart2, line, checkout string
	lineVersion                 int64
}

// cartView is what a refused request must leave alone in a cart.
type cartView struct {
	Version   int64  `json:"version"`
	State     string `json:"state"`
	UpdatedAt string `json:"updated_at"`
	Lines     []struct {
		ID          string `json:"id"`
		Qty         int64  `json:"qty"`
		LineVersion int64  `json:"line_version"`
	} `json:"lines"`
}

func (s *routeFuzzer) must(t testing.TB, method, path, body string, want int) []byte {
	t.Helper()
	status, resp, _ := s.handle(method, path, []byte(body), "")
	if status != want {
		t.Fatalf("%s %s: %d %s", method, path, status, resp)
	}
	return resp
}

// freshCarts replaces the carts once the fuzzer has checked one out or
// merged it away, so later inputs still reach open carts.
func (s *routeFuzzer) freshCarts(t testing.TB) {
	t.Helper()
	newCart := func(owner string) (string, string, int64) {
		var c struct {
			ID    string `json:"id"`
			Lines []struct {
				ID          string `json:"id"`
				LineVersion int64  `json:"line_version"`
			} `json:"lines"`
		}
		json.Unmarshal(s.must(t, "POST", "/v1/carts", `{"owner":"`+owner+`"}`, 201), &c)
		json.Unmarshal(s.must(t, "POST", "/v1/carts/"+c.ID+"/lines", `{"sku":"fc","pool":"fc","qty":1,"price":{"amount_minor":100,"currency":"EUR"}}`, 200), &c)
		return c.ID, c.Lines[0].ID, c.Lines[0].LineVersion
	}
	s.cart, s.line, s.lineVersion = newCart("user:fz1")
	s.cart2, _, _ = newCart("anon:fz2")
}

func (s *routeFuzzer) cartState(t testing.TB, id string) (cartView, bool) {
	t.Helper()
	status, body, _ := s.handle("GET", "/v1/carts/"+id, nil, "")
	if status != 200 {
		return cartView{}, false
	}
	var v cartView
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("cart %s: %v: %s", id, err, body)
	}
	return v, true
}

// visible is the state a refused request must not change.
type visible struct {
	pools        map[string]fuzzPool
	cart, cart2  cartView
	open         bool
	checkoutBody string
}

func (s *routeFuzzer) snapshot(t testing.TB) visible {
	t.Helper()
	v := visible{pools: s.pools(t)}
	v.cart, v.open = s.cartState(t, s.cart)
	var open2 bool
	v.cart2, open2 = s.cartState(t, s.cart2)
	v.open = v.open && open2 && v.cart.State == "open" && v.cart2.State == "open"
	if s.checkout != "" {
		_, body, _ := s.handle("GET", "/v1/checkouts/"+s.checkout, nil, "")
		v.checkoutBody = string(body)
	}
	return v
}

// unchanged fails if after differs from before in anything a write would
// change. Held units may fall (holds expire); a checkout's state may
// move to expired for the same reason.
func unchanged(t *testing.T, what string, before, after visible) {
	t.Helper()
	if len(after.pools) != len(before.pools) {
		t.Fatalf("%s: refused request changed the pool count %d -> %d", what, len(before.pools), len(after.pools))
	}
	for id, a := range after.pools {
		b := before.pools[id]
		if a.OnHand != b.OnHand || a.Sold != b.Sold || a.Held > b.Held || a.UpdatedAt != b.UpdatedAt {
			t.Fatalf("%s: refused request changed pool %s:\n%+v\n%+v", what, id, b, a)
		}
	}
	if fmt.Sprint(after.cart) != fmt.Sprint(before.cart) || fmt.Sprint(after.cart2) != fmt.Sprint(before.cart2) {
		t.Fatalf("%s: refused request changed a cart:\n%+v %+v\n%+v %+v", what, before.cart, before.cart2, after.cart, after.cart2)
	}
}

func FuzzRoutes(f *testing.F) {
	s := &routeFuzzer{fuzzServer: fuzzServer{n: startCluster(f, 1)[0], last: "r_1"}}
	s.must(f, "PUT", "/v1/pools/fc", `{"on_hand": 40, "per_buyer_limit": 6}`, 201)
	s.must(f, "PUT", "/v1/pools/fc2", `{"on_hand": 2}`, 201)
	s.freshCarts(f)

	const GET, POST, PUT, DELETE, PATCH = 0, 1, 2, 3, 4
	seeds := []struct {
		m, p           uint8
		body, key, arg string
	}{
		{POST, 0, `{"owner":"anon:x"}`, "", ""},
		{POST, 0, `{"owner":"nobody"}`, "", ""},
		{POST, 0, `{"owner":"user:\xff"}`, "", ""},
		{GET, 1, ``, "", ""},
		{GET, 2, ``, "", "linearizable"},
		{GET, 2, ``, "", "bogus"},
		{POST, 3, `{"sku":"s","variant":"v","seller":"x","fulfillment":"ship","attrs":{"k":"v"},"pool":"fc","qty":2,"price":{"amount_minor":1,"currency":"EUR","offer_id":"o"}}`, "k1", ""},
		{POST, 3, `{"sku":"s","qty":0}`, "", ""},
		{POST, 3, `{"sku":"\xc3\x28","qty":1}`, "", ""},
		{POST, 3, `{"sku":"s","qty":1,"attrs":{"\xff":"v"}}`, "", ""},
		{PATCH, 4, `{"qty":3,"line_version":1}`, "", ""},
		{PATCH, 4, `{"qty":3}`, "", ""},
		{PATCH, 4, `{"qty":3,"line_version":99}`, "", ""},
		{DELETE, 5, ``, "", ""},
		{DELETE, 6, ``, "", "-1"},
		{DELETE, 6, ``, "", "99999999999999999999"},
		{DELETE, 4, `{}`, "", ""},
		{POST, 7, `{"source":"{c2}","policy":"sum"}`, "", ""},
		{POST, 7, `{"source":"c_1","policy":"nope"}`, "", ""},
		{POST, 8, ``, "", ""},
		{POST, 9, `{"expected_version":2,"ttl_ms":60000,"mode":"partial"}`, "co1", ""},
		{POST, 9, `{"ttl_ms":60000}`, "", ""},
		{GET, 10, ``, "", ""},
		{POST, 11, ``, "", ""},
		{GET, 12, ``, "", "c_\xff"},
		{POST, 13, `{"sku":"s","qty":1}`, "", "c_0"},
		{PATCH, 14, `{"qty":1,"line_version":1}`, "", "l_zz"},
		{GET, 15, ``, "", "co_1"},
		{POST, 16, ``, "", "co_%ff"},
		{GET, 17, ``, "", "0"},
		{GET, 17, ``, "", "1001"},
		{GET, 17, ``, "", "2"},
		{GET, 18, ``, "", "fc"},
		{GET, 18, ``, "", "\xff"},
		{GET, 19, ``, "", "1"},
		{GET, 20, ``, "", "stale"},
		{GET, 21, ``, "", "x"},
		{PUT, 22, `{"on_hand":1}`, "", "p\xffq"},
		{POST, 23, `{"delta":1}`, "", "%2F%2F"},
		{POST, 24, `{"buyer":"b","lines":[{"pool":"fc","qty":1}],"ttl_ms":1000}`, "r1", ""},
		{POST, 25, ``, "", "r_1"},
		{POST, 26, `{}`, "", ""},
		{POST, 27, `{"ttl_ms":5000}`, "", ""},
		{POST, 28, ``, "", ""},
		{PUT, 29, `{"on_hand":40,"per_buyer_limit":6,"waitlist":{"enabled":true}}`, "", ""},
		{POST, 30, `{"delta":-1000000000001}`, "", ""},
		{POST, 31, `{"source":"{c}"}`, "", ""},
		{POST, 32, ``, "", "lines"},
		{GET, 33, ``, "", "health"},
		{GET, 34, ``, "", "consistency=stale&consistency=linearizable"},
		{GET, 35, ``, "", "consistency=%ff"},
	}
	for _, sd := range seeds {
		f.Add(sd.m, sd.p, []byte(sd.body), sd.key, sd.arg)
	}

	f.Fuzz(func(t *testing.T, m, p uint8, body []byte, key, arg string) {
		method := fuzzMethods[int(m)%len(fuzzMethods)]
		path := strings.NewReplacer(
			"{c2}", s.cart2, "{c}", s.cart, "{l}", s.line, "{v}", fmt.Sprint(s.lineVersion),
			"{co}", s.checkout, "{r}", s.last, "{qa}", url.QueryEscape(arg), "{a}", arg,
		).Replace(fuzzRoutePaths[int(p)%len(fuzzRoutePaths)])
		// Bodies may name the carts (a merge source).
		body = []byte(strings.NewReplacer("{c2}", s.cart2, "{c}", s.cart).Replace(string(body)))

		before := s.snapshot(t)
		if !before.open {
			s.freshCarts(t)
			before = s.snapshot(t)
		}
		status, resp, node := s.handle(method, path, body, key)
		what := fmt.Sprintf("%s %s %q key %q", method, path, body, key)
		if node != s.n.id {
			t.Fatalf("%s: X-Holdfast-Node %q", what, node)
		}
		switch {
		case status >= 200 && status < 300:
			if path != "/metrics" && !json.Valid(resp) {
				t.Fatalf("%s: %d with a body that is not JSON: %q", what, status, resp)
			}
			s.track(method, path, resp)
		case status >= 400 && status < 500, status == 503:
			if _, err := errorShape(status, resp); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if status != 503 {
				unchanged(t, what, before, s.snapshot(t))
			}
		default:
			t.Fatalf("%s: status %d: %s", what, status, resp)
		}
	})
}

// track follows the ids a successful write returned.
func (s *routeFuzzer) track(method, path string, resp []byte) {
	if method != "POST" && method != "PATCH" {
		return
	}
	var v struct {
		ID    string               `json:"id"`
		Cart  *struct{ ID string } `json:"cart"`
		Lines []struct {
			ID          string `json:"id"`
			LineVersion int64  `json:"line_version"`
		} `json:"lines"`
	}
	json.Unmarshal(resp, &v)
	switch {
	case strings.HasPrefix(v.ID, "r_"):
		s.last = v.ID
	case strings.HasPrefix(v.ID, "co_"):
		s.checkout = v.ID
	case v.ID == s.cart:
		found := false
		for _, l := range v.Lines {
			if l.ID == s.line {
				s.lineVersion, found = l.LineVersion, true
			}
		}
		if !found && len(v.Lines) > 0 { // the line was deleted: follow another
			s.line, s.lineVersion = v.Lines[0].ID, v.Lines[0].LineVersion
		}
	}
}
