package api_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The contract tests run against one real single-node cluster per top-level
// test (Pebble, Raft and HTTP on loopback) and check CONTRACT.md's
// Conventions, Pools, Reservations and Health sections over the wire.

// contractStatus is the HTTP status of every error code the API may send.
var contractStatus = map[string]int{
	"invalid_argument":     400,
	"unauthenticated":      401,
	"permission_denied":    403,
	"not_found":            404,
	"method_not_allowed":   405,
	"sold_out":             409,
	"buyer_limit":          409,
	"not_open":             409,
	"expired":              409,
	"invalid_state":        409,
	"version_conflict":     409,
	"idempotency_mismatch": 409,
	"payload_too_large":    413,
	"unavailable":          503,
}

var rfc3339ms = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$`)

// errorShape checks that body is exactly the contract's error object,
// {"error": {"code", "message", "details"?}}, with a known code whose
// status is status, and returns the inner object.
func errorShape(status int, body []byte) (map[string]any, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, fmt.Errorf("error body is not a JSON object: %v: %q", err, body)
	}
	if len(top) != 1 || top["error"] == nil {
		return nil, fmt.Errorf("error body must hold only \"error\": %s", body)
	}
	var e map[string]any
	if err := json.Unmarshal(top["error"], &e); err != nil {
		return nil, fmt.Errorf("\"error\" is not an object: %s", body)
	}
	for k := range e {
		if k != "code" && k != "message" && k != "details" {
			return nil, fmt.Errorf("unexpected field error.%s: %s", k, body)
		}
	}
	code, _ := e["code"].(string)
	want, known := contractStatus[code]
	if !known {
		return nil, fmt.Errorf("unknown error code %q: %s", code, body)
	}
	if want != status {
		return nil, fmt.Errorf("code %s came with status %d, want %d", code, status, want)
	}
	if msg, _ := e["message"].(string); msg == "" {
		return nil, fmt.Errorf("empty error.message: %s", body)
	}
	if d, ok := e["details"]; ok {
		if _, isObj := d.(map[string]any); !isObj {
			return nil, fmt.Errorf("error.details is not an object: %s", body)
		}
	}
	return e, nil
}

// call sends a request to this node. Requests net/http refuses to send (a
// bad escape in the path, a control character in a header) go raw.
func (n *testNode) call(t testing.TB, method, path, body string, headers ...string) response {
	t.Helper()
	raw := false
	if _, err := url.Parse(n.url(path)); err != nil {
		raw = true
	}
	for _, h := range headers {
		raw = raw || strings.ContainsFunc(h, func(r rune) bool { return r < ' ' || r == 0x7f })
	}
	if raw {
		return rawDo(t, n, method, path, []byte(body), headers...)
	}
	return do(t, method, n.url(path), body, headers...)
}

// wantStatus asserts the status, the X-Holdfast-Node header and a JSON
// content type, and returns the decoded object.
func wantStatus(t testing.TB, n *testNode, r response, status int) map[string]any {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if got := r.header.Get("X-Holdfast-Node"); got != n.id {
		t.Fatalf("X-Holdfast-Node = %q, want %q", got, n.id)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q, want application/json", ct)
	}
	return r.json(t)
}

// wantError asserts a contract error response and returns error.details
// (nil when absent).
func wantError(t testing.TB, n *testNode, r response, status int, code string) map[string]any {
	t.Helper()
	if r.status != status || r.errCode() != code {
		t.Fatalf("got %d %q, want %d %q: %s", r.status, r.errCode(), status, code, r.body)
	}
	if got := r.header.Get("X-Holdfast-Node"); got != n.id {
		t.Fatalf("X-Holdfast-Node = %q, want %q", got, n.id)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q, want application/json", ct)
	}
	e, err := errorShape(r.status, r.body)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := e["details"].(map[string]any)
	return d
}

// num reads a JSON number field.
func num(t testing.TB, obj map[string]any, key string) int64 {
	t.Helper()
	f, ok := obj[key].(float64)
	if !ok {
		t.Fatalf("field %q is %T (%v), want a number", key, obj[key], obj[key])
	}
	return int64(f)
}

func putPool(t testing.TB, n *testNode, id, body string, status int) map[string]any {
	t.Helper()
	return wantStatus(t, n, n.call(t, "PUT", "/v1/pools/"+id, body), status)
}

func getPool(t testing.TB, n *testNode, id string) map[string]any {
	t.Helper()
	return wantStatus(t, n, n.call(t, "GET", "/v1/pools/"+id, ""), 200)
}

// counts returns held, sold, on_hand, available of a pool and checks the
// invariant between them.
func counts(t testing.TB, n *testNode, id string) [4]int64 {
	t.Helper()
	p := getPool(t, n, id)
	c := [4]int64{num(t, p, "held"), num(t, p, "sold"), num(t, p, "on_hand"), num(t, p, "available")}
	if c[3] != c[2]-c[0]-c[1] || c[3] < 0 {
		t.Fatalf("pool %s: available %d != on_hand %d - held %d - sold %d", id, c[3], c[2], c[0], c[1])
	}
	return c
}

func reserve(t testing.TB, n *testNode, body string, headers ...string) map[string]any {
	t.Helper()
	return wantStatus(t, n, n.call(t, "POST", "/v1/reservations", body, headers...), 201)
}

// lineStates returns the state of each line of a reservation or of
// error.details.
func lineStates(t testing.TB, obj map[string]any) []string {
	t.Helper()
	ls, ok := obj["lines"].([]any)
	if !ok {
		t.Fatalf("no lines in %v", obj)
	}
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i], _ = l.(map[string]any)["state"].(string)
	}
	return out
}

// rawDo sends a request over its own connection and reads the answer even
// when the server answers before reading the whole body (as it does for a
// body over the limit): the body is written concurrently and write errors
// are ignored.
func rawDo(t testing.TB, n *testNode, method, path string, body []byte, headers ...string) response {
	t.Helper()
	c, err := net.DialTimeout("tcp", n.httpAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var head bytes.Buffer
	fmt.Fprintf(&head, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", method, path, n.httpAddr, len(body))
	for i := 0; i+1 < len(headers); i += 2 {
		fmt.Fprintf(&head, "%s: %s\r\n", headers[i], headers[i+1])
	}
	head.WriteString("\r\n")
	if _, err := c.Write(head.Bytes()); err != nil {
		t.Fatal(err)
	}
	go c.Write(body) // may fail once the server has answered and closed
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// allPools returns every pool's GET body (minus as_of) keyed by id: the
// whole visible state of the pools, to show a refused request changed
// nothing.
func allPools(t testing.TB, n *testNode) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	after := ""
	for {
		q := "/v1/pools?limit=1000"
		if after != "" {
			q += "&after=" + after
		}
		page := wantStatus(t, n, n.call(t, "GET", q, ""), 200)
		for _, p := range page["pools"].([]any) {
			m := p.(map[string]any)
			// as_of moves with time; demand counts refused requests too
			// (they are demand) and its rates move with time.
			delete(m, "as_of")
			delete(m, "demand")
			out[m["id"].(string)] = m
		}
		if page["has_more"] != true {
			return out
		}
		after = page["next_after"].(string)
	}
}

// ---- 1. error codes ----

func TestContractErrors(t *testing.T) {
	n := startCluster(t, 1)[0]

	t.Run("invalid_argument", func(t *testing.T) {
		wantError(t, n, n.call(t, "POST", "/v1/reservations", `{`), 400, "invalid_argument")
		wantError(t, n, n.call(t, "PUT", "/v1/pools/ia", `{"on_hand": -1}`), 400, "invalid_argument")
		wantError(t, n, n.call(t, "GET", "/v1/pools/bad%20id", ""), 400, "invalid_argument")
		wantError(t, n, n.call(t, "GET", "/v1/pools?limit=0", ""), 400, "invalid_argument")
		wantError(t, n, n.call(t, "GET", "/v1/pools?after=bad%20id", ""), 400, "invalid_argument")
		wantError(t, n, n.call(t, "GET", "/v1/pools/x?consistency=eventual", ""), 400, "invalid_argument")
		wantError(t, n, n.call(t, "GET", "/v1/pools/%zz", ""), 400, "invalid_argument")

		// Bodies must be JSON objects; null is not one.
		putPool(t, n, "ia", `{"on_hand": 5}`, 201)
		id := reserve(t, n, `{"buyer":"u","lines":[{"pool":"ia","qty":1}]}`)["id"].(string)
		for _, body := range []string{`null`, `[]`, `"x"`, `1`, `true`, `{} {}`, `{"x":1}`} {
			wantError(t, n, n.call(t, "POST", "/v1/reservations/"+id+"/confirm", body), 400, "invalid_argument")
			wantError(t, n, n.call(t, "POST", "/v1/reservations/"+id+"/release", body), 400, "invalid_argument")
		}
		if g := wantStatus(t, n, n.call(t, "GET", "/v1/reservations/"+id, ""), 200); g["state"] != "active" {
			t.Fatalf("refused transitions changed the reservation: %s", mustJSON(g))
		}
		// An empty (or JSON-whitespace) body is {}.
		wantStatus(t, n, n.call(t, "POST", "/v1/reservations/"+id+"/release", " \r\n\t"), 200)

		// A draw seed is bounded like an id and says so.
		e := n.call(t, "PUT", "/v1/pools/ia", `{"on_hand": 5, "draw": {"opens_at": "2030-01-01T00:00:00Z", "closes_at": "2030-01-02T00:00:00Z", "seed": "`+strings.Repeat("s", 129)+`"}}`)
		wantError(t, n, e, 400, "invalid_argument")
		if !strings.Contains(string(e.body), "draw.seed") {
			t.Fatalf("seed too long: %s", e.body)
		}

		// A request fasthttp cannot read is answered in the contract's
		// format, without echoing the request back.
		r := rawDo(t, n, "GET", "*", nil, "X-Secret", "hunter2")
		wantError(t, n, r, 400, "invalid_argument")
		if bytes.Contains(r.body, []byte("hunter2")) || bytes.Contains(r.body, []byte("Host")) {
			t.Fatalf("parse error echoes the request: %s", r.body)
		}
	})

	t.Run("not_found", func(t *testing.T) {
		putPool(t, n, "nf", `{"on_hand": 5}`, 201)
		wantError(t, n, n.call(t, "GET", "/v1/pools/no-such-pool", ""), 404, "not_found")
		wantError(t, n, n.call(t, "GET", "/v1/pools/no-such-pool?consistency=stale", ""), 404, "not_found")
		wantError(t, n, n.call(t, "POST", "/v1/pools/no-such-pool/adjust", `{"delta": 1}`), 404, "not_found")
		wantError(t, n, n.call(t, "POST", "/v1/reservations", `{"buyer":"u","lines":[{"pool":"nf","qty":1},{"pool":"no-such-pool","qty":1}]}`), 404, "not_found")
		if c := counts(t, n, "nf"); c[0] != 0 {
			t.Fatalf("a refused reservation held %d units", c[0])
		}
		for _, id := range []string{"r_ffff", "r_0", "r_01", "r_x", "x", "r_", "r_FF", "r_10000000000000000"} {
			wantError(t, n, n.call(t, "GET", "/v1/reservations/"+id, ""), 404, "not_found")
			for _, op := range []string{"confirm", "release"} {
				wantError(t, n, n.call(t, "POST", "/v1/reservations/"+id+"/"+op, ""), 404, "not_found")
			}
			wantError(t, n, n.call(t, "POST", "/v1/reservations/"+id+"/extend", `{"ttl_ms": 1000}`), 404, "not_found")
		}
		for _, c := range []struct{ method, path string }{
			{"GET", "/"}, {"GET", "/nope"}, {"GET", "/v1"}, {"GET", "/v1/nope"}, {"GET", "/v2/pools"},
			{"GET", "/v1/pools/nf/bogus"}, {"POST", "/v1/pools/nf/bogus"}, {"GET", "/v1/pools/a/b"},
			{"POST", "/v1/reservations/r_1/bogus"}, {"GET", "/v1/reservations/r_1/bogus"},
			{"GET", "/v1/reservations/r_1/confirm/x"}, {"GET", "/metrics/x"}, {"GET", "/v1//pools"},
		} {
			wantError(t, n, n.call(t, c.method, c.path, ""), 404, "not_found")
		}
	})

	t.Run("sold_out", func(t *testing.T) {
		putPool(t, n, "so", `{"on_hand": 2}`, 201)
		d := wantError(t, n, n.call(t, "POST", "/v1/reservations", `{"buyer":"u1","lines":[{"pool":"so","qty":3}]}`), 409, "sold_out")
		if d == nil {
			t.Fatal("sold_out without details")
		}
		if got := lineStates(t, d); !slices.Equal(got, []string{"sold_out"}) {
			t.Fatalf("details.lines states %v", got)
		}
		l := d["lines"].([]any)[0].(map[string]any)
		if l["pool"] != "so" || num(t, l, "qty") != 3 {
			t.Fatalf("details.lines[0] = %v", l)
		}
		if c := counts(t, n, "so"); c != [4]int64{0, 0, 2, 2} {
			t.Fatalf("pool after sold_out: %v", c)
		}
		reserve(t, n, `{"buyer":"u1","lines":[{"pool":"so","qty":2}]}`)
		d = wantError(t, n, n.call(t, "POST", "/v1/reservations", `{"buyer":"u2","lines":[{"pool":"so","qty":1}]}`), 409, "sold_out")
		if got := lineStates(t, d); !slices.Equal(got, []string{"sold_out"}) {
			t.Fatalf("details.lines states %v", got)
		}
	})

	t.Run("buyer_limit", func(t *testing.T) {
		putPool(t, n, "bl", `{"on_hand": 10, "per_buyer_limit": 1}`, 201)
		d := wantError(t, n, n.call(t, "POST", "/v1/reservations", `{"buyer":"b1","lines":[{"pool":"bl","qty":2}]}`), 409, "buyer_limit")
		if got := lineStates(t, d); !slices.Equal(got, []string{"buyer_limit"}) {
			t.Fatalf("details.lines states %v", got)
		}
		reserve(t, n, `{"buyer":"b1","lines":[{"pool":"bl","qty":1}]}`)
		d = wantError(t, n, n.call(t, "POST", "/v1/reservations", `{"buyer":"b1","lines":[{"pool":"bl","qty":1}]}`), 409, "buyer_limit")
		if got := lineStates(t, d); !slices.Equal(got, []string{"buyer_limit"}) {
			t.Fatalf("details.lines states %v", got)
		}
		// Two lines of one request on the same pool count together.
		d = wantError(t, n, n.call(t, "POST", "/v1/reservations", `{"buyer":"b2","lines":[{"pool":"bl","qty":1},{"pool":"bl","qty":1}]}`), 409, "buyer_limit")
		if got := lineStates(t, d); !slices.Equal(got, []string{"available", "buyer_limit"}) {
			t.Fatalf("details.lines states %v", got)
		}
		reserve(t, n, `{"buyer":"b2","lines":[{"pool":"bl","qty":1}]}`)
		if c := counts(t, n, "bl"); c[0] != 2 {
			t.Fatalf("held %d, want 2", c[0])
		}
	})

	t.Run("expired", func(t *testing.T) {
		putPool(t, n, "ex", `{"on_hand": 5}`, 201)
		r1 := reserve(t, n, `{"buyer":"e1","lines":[{"pool":"ex","qty":1}],"ttl_ms":50}`)
		r2 := reserve(t, n, `{"buyer":"e2","lines":[{"pool":"ex","qty":2}],"ttl_ms":50}`)
		time.Sleep(150 * time.Millisecond)
		d := wantError(t, n, n.call(t, "POST", "/v1/reservations/"+r1["id"].(string)+"/confirm", ""), 409, "expired")
		if res, _ := d["reservation"].(map[string]any); res == nil || res["state"] != "expired" {
			t.Fatalf("details.reservation = %v", d["reservation"])
		}
		wantError(t, n, n.call(t, "POST", "/v1/reservations/"+r2["id"].(string)+"/extend", `{"ttl_ms": 60000}`), 409, "expired")
		wantError(t, n, n.call(t, "POST", "/v1/reservations/"+r1["id"].(string)+"/confirm", ""), 409, "expired")
		for _, r := range []map[string]any{r1, r2} {
			g := wantStatus(t, n, n.call(t, "GET", "/v1/reservations/"+r["id"].(string), ""), 200)
			if g["state"] != "expired" || !slices.Equal(lineStates(t, g), []string{"returned"}) {
				t.Fatalf("expired reservation reads %s", mustJSON(g))
			}
		}
		if c := counts(t, n, "ex"); c != [4]int64{0, 0, 5, 5} {
			t.Fatalf("units of expired holds not back: %v", c)
		}
	})

	t.Run("invalid_state", func(t *testing.T) {
		putPool(t, n, "is", `{"on_hand": 10, "max_extensions": 1}`, 201)
		rel := reserve(t, n, `{"buyer":"i1","lines":[{"pool":"is","qty":1}]}`)["id"].(string)
		wantStatus(t, n, n.call(t, "POST", "/v1/reservations/"+rel+"/release", ""), 200)
		d := wantError(t, n, n.call(t, "POST", "/v1/reservations/"+rel+"/confirm", ""), 409, "invalid_state")
		if res, _ := d["reservation"].(map[string]any); res == nil || res["state"] != "released" {
			t.Fatalf("details.reservation = %v", d["reservation"])
		}
		wantError(t, n, n.call(t, "POST", "/v1/reservations/"+rel+"/extend", `{"ttl_ms": 1000}`), 409, "invalid_state")

		conf := reserve(t, n, `{"buyer":"i2","lines":[{"pool":"is","qty":3}]}`)["id"].(string)
		wantStatus(t, n, n.call(t, "POST", "/v1/reservations/"+conf+"/confirm", ""), 200)
		wantError(t, n, n.call(t, "POST", "/v1/reservations/"+conf+"/release", ""), 409, "invalid_state")
		wantError(t, n, n.call(t, "POST", "/v1/reservations/"+conf+"/extend", `{"ttl_ms": 1000}`), 409, "invalid_state")

		held := reserve(t, n, `{"buyer":"i3","lines":[{"pool":"is","qty":2}]}`)["id"].(string)
		before := getPool(t, n, "is")
		// held 2 + sold 3 = 5: on_hand may go down to 5, not below.
		wantError(t, n, n.call(t, "PUT", "/v1/pools/is", `{"on_hand": 4}`), 409, "invalid_state")
		wantError(t, n, n.call(t, "POST", "/v1/pools/is/adjust", `{"delta": -6}`), 409, "invalid_state")
		after := getPool(t, n, "is")
		for _, f := range []string{"as_of", "demand"} {
			delete(before, f)
			delete(after, f)
		}
		if !reflect.DeepEqual(before, after) {
			t.Fatalf("refused on_hand change altered the pool:\n%s\n%s", mustJSON(before), mustJSON(after))
		}
		wantStatus(t, n, n.call(t, "POST", "/v1/pools/is/adjust", `{"delta": -5}`), 200)
		putPool(t, n, "is", `{"on_hand": 5, "max_extensions": 1}`, 200)
		if c := counts(t, n, "is"); c != [4]int64{2, 3, 5, 0} {
			t.Fatalf("pool at the floor: %v", c)
		}

		wantStatus(t, n, n.call(t, "POST", "/v1/reservations/"+held+"/extend", `{"ttl_ms": 60000}`), 200)
		d = wantError(t, n, n.call(t, "POST", "/v1/reservations/"+held+"/extend", `{"ttl_ms": 60000}`), 409, "invalid_state")
		if res, _ := d["reservation"].(map[string]any); res == nil || res["state"] != "active" || num(t, res, "extensions") != 1 {
			t.Fatalf("details.reservation = %v", d["reservation"])
		}
	})

	t.Run("idempotency_mismatch", func(t *testing.T) {
		putPool(t, n, "im", `{"on_hand": 10}`, 201)
		reserve(t, n, `{"buyer":"m1","lines":[{"pool":"im","qty":1}]}`, "Idempotency-Key", "im-key-1")
		wantError(t, n, n.call(t, "POST", "/v1/reservations", `{"buyer":"m1","lines":[{"pool":"im","qty":2}]}`, "Idempotency-Key", "im-key-1"), 409, "idempotency_mismatch")
		// Whitespace differs: a different body.
		wantError(t, n, n.call(t, "POST", "/v1/reservations", `{"buyer":"m1", "lines":[{"pool":"im","qty":1}]}`, "Idempotency-Key", "im-key-1"), 409, "idempotency_mismatch")
		// The same key on another endpoint.
		wantError(t, n, n.call(t, "POST", "/v1/pools/im/adjust", `{"buyer":"m1","lines":[{"pool":"im","qty":1}]}`, "Idempotency-Key", "im-key-1"), 400, "invalid_argument")
		wantError(t, n, n.call(t, "POST", "/v1/pools/im/adjust", `{"delta": 1}`, "Idempotency-Key", "im-key-1"), 409, "idempotency_mismatch")
		if c := counts(t, n, "im"); c != [4]int64{1, 0, 10, 9} {
			t.Fatalf("pool after mismatches: %v", c)
		}
	})

	t.Run("payload_too_large", func(t *testing.T) {
		putPool(t, n, "big", `{"on_hand": 10}`, 201)
		before := allPools(t, n)
		over := bytes.Repeat([]byte(" "), 1<<20+1)
		copy(over, `{"on_hand": 7}`)
		huge := bytes.Repeat([]byte("x"), 5<<20)
		for _, c := range []struct {
			method, path string
			body         []byte
		}{
			{"PUT", "/v1/pools/big", over},
			{"POST", "/v1/reservations", over},
			{"POST", "/v1/pools/big/adjust", over},
			{"PUT", "/v1/pools/big", huge},
			{"POST", "/v1/reservations", huge},
		} {
			wantError(t, n, rawDo(t, n, c.method, c.path, c.body), 413, "payload_too_large")
		}
		// Also through an ordinary client (which may see the connection
		// closed while it still writes; then only the raw check above counts).
		if r, ok := tryDo(t, "PUT", n.url("/v1/pools/big"), string(over)); ok {
			wantError(t, n, r, 413, "payload_too_large")
		}
		if after := allPools(t, n); !reflect.DeepEqual(before, after) {
			t.Fatalf("a refused body changed pools")
		}
		// Exactly 1 MiB is accepted.
		exact := bytes.Repeat([]byte(" "), 1<<20)
		copy(exact, `{"on_hand": 7}`)
		wantStatus(t, n, rawDo(t, n, "PUT", "/v1/pools/big", exact), 200)
		if c := counts(t, n, "big"); c[2] != 7 {
			t.Fatalf("on_hand %d after a 1 MiB PUT", c[2])
		}
	})

	t.Run("method_not_allowed", func(t *testing.T) {
		for _, c := range []struct{ method, path, allow string }{
			{"DELETE", "/v1/pools/x", "GET, PUT"},
			{"POST", "/v1/pools/x", "GET, PUT"},
			{"PATCH", "/v1/pools/x", "GET, PUT"},
			{"POST", "/v1/pools", "GET"},
			{"GET", "/v1/pools/x/adjust", "POST"},
			{"GET", "/v1/reservations", "POST"},
			{"PUT", "/v1/reservations/r_1", "GET"},
			{"DELETE", "/v1/reservations/r_1", "GET"},
			{"GET", "/v1/reservations/r_1/confirm", "POST"},
			{"PUT", "/v1/reservations/r_1/extend", "POST"},
			{"POST", "/v1/health", "GET"},
			{"DELETE", "/v1/cluster", "GET"},
			{"POST", "/metrics", "GET"},
		} {
			r := n.call(t, c.method, c.path, "")
			wantError(t, n, r, 405, "method_not_allowed")
			if got := r.header.Get("Allow"); got != c.allow {
				t.Errorf("%s %s: Allow %q, want %q", c.method, c.path, got, c.allow)
			}
		}
	})
}

// tryDo is do that reports a transport error instead of failing.
func tryDo(t testing.TB, method, url, body string) (response, bool) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Logf("%s %s: %v (server closed while the client wrote)", method, url, err)
		return response{}, false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}, true
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// ---- success paths ----

func TestContractPoolsAndReservations(t *testing.T) {
	n := startCluster(t, 1)[0]

	t.Run("create_then_reconfigure", func(t *testing.T) {
		p := putPool(t, n, "cr", `{"on_hand": 100}`, 201)
		want := map[string]any{"id": "cr", "on_hand": 100.0, "held": 0.0, "sold": 0.0, "available": 100.0,
			"per_buyer_limit": 0.0, "hold_ttl_ms": 600000.0, "max_hold_ttl_ms": 900000.0, "max_extensions": 1.0,
			"mode": "fcfs", "claim": "soft_claim", "consistency": "linearizable"}
		for k, v := range want {
			if p[k] != v {
				t.Errorf("created pool %s = %v, want %v", k, p[k], v)
			}
		}
		if w, _ := p["waitlist"].(map[string]any); w == nil || w["enabled"] != false || w["length"] != 0.0 {
			t.Errorf("waitlist = %v", p["waitlist"])
		}
		p = putPool(t, n, "cr", `{"on_hand": 50, "per_buyer_limit": 2, "hold_ttl_ms": 1000, "max_hold_ttl_ms": 5000, "max_extensions": 3, "mode": "fcfs"}`, 200)
		for k, v := range map[string]any{"on_hand": 50.0, "per_buyer_limit": 2.0, "hold_ttl_ms": 1000.0, "max_hold_ttl_ms": 5000.0, "max_extensions": 3.0, "available": 50.0} {
			if p[k] != v {
				t.Errorf("reconfigured pool %s = %v, want %v", k, p[k], v)
			}
		}
		for _, f := range []string{"created_at", "updated_at", "as_of"} {
			if s, _ := p[f].(string); !rfc3339ms.MatchString(s) {
				t.Errorf("%s = %q, not RFC 3339 UTC with milliseconds", f, p[f])
			}
		}
		// Omitted fields return to their defaults: PUT replaces the config.
		p = putPool(t, n, "cr", `{"on_hand": 50}`, 200)
		if p["per_buyer_limit"] != 0.0 || p["hold_ttl_ms"] != 600000.0 {
			t.Errorf("PUT with only on_hand kept old settings: %s", mustJSON(p))
		}
		// A hold_ttl_ms above the default max raises the max with it.
		p = putPool(t, n, "cr", `{"on_hand": 50, "hold_ttl_ms": 1200000}`, 200)
		if p["max_hold_ttl_ms"] != 1200000.0 {
			t.Errorf("max_hold_ttl_ms = %v, want 1200000", p["max_hold_ttl_ms"])
		}
	})

	t.Run("pool_fields_and_claims", func(t *testing.T) {
		putPool(t, n, "cl", `{"on_hand": 100}`, 201)
		p := getPool(t, n, "cl")
		if p["claim"] != "soft_claim" || p["consistency"] != "linearizable" {
			t.Fatalf("fresh pool: %s", mustJSON(p))
		}
		if s, _ := p["as_of"].(string); !rfc3339ms.MatchString(s) {
			t.Fatalf("as_of %q", p["as_of"])
		}
		asOf, _ := time.Parse(time.RFC3339Nano, p["as_of"].(string))
		if d := time.Since(asOf); d < -2*time.Second || d > 5*time.Second {
			t.Fatalf("linearizable as_of %v is %v away from now", asOf, d)
		}
		r := reserve(t, n, `{"buyer":"c1","lines":[{"pool":"cl","qty":60}]}`)
		wantStatus(t, n, n.call(t, "POST", "/v1/reservations/"+r["id"].(string)+"/confirm", ""), 200)
		reserve(t, n, `{"buyer":"c2","lines":[{"pool":"cl","qty":31}]}`)
		p = getPool(t, n, "cl")
		if num(t, p, "held") != 31 || num(t, p, "sold") != 60 || num(t, p, "available") != 9 {
			t.Fatalf("pool: %s", mustJSON(p))
		}
		if p["claim"] != "confirm_at_checkout" {
			t.Fatalf("9 of 100 left: claim %v", p["claim"])
		}
		reserve(t, n, `{"buyer":"c3","lines":[{"pool":"cl","qty":9}]}`)
		if p = getPool(t, n, "cl"); p["claim"] != "sold_out" || num(t, p, "available") != 0 {
			t.Fatalf("nothing left: %s", mustJSON(p))
		}
		// A big pool with fewer than 10% left is low even with many units.
		putPool(t, n, "cl-big", `{"on_hand": 1000}`, 201)
		reserve(t, n, `{"buyer":"c1","lines":[{"pool":"cl-big","qty":901}]}`)
		if p = getPool(t, n, "cl-big"); p["claim"] != "confirm_at_checkout" {
			t.Fatalf("99 of 1000 left: claim %v", p["claim"])
		}
		putPool(t, n, "cl-zero", `{"on_hand": 0}`, 201)
		if p = getPool(t, n, "cl-zero"); p["claim"] != "sold_out" {
			t.Fatalf("on_hand 0: claim %v", p["claim"])
		}
	})

	t.Run("consistency", func(t *testing.T) {
		putPool(t, n, "cs", `{"on_hand": 3}`, 201)
		lin := wantStatus(t, n, n.call(t, "GET", "/v1/pools/cs?consistency=linearizable", ""), 200)
		stale := wantStatus(t, n, n.call(t, "GET", "/v1/pools/cs?consistency=stale", ""), 200)
		if lin["consistency"] != "linearizable" || stale["consistency"] != "stale" {
			t.Fatalf("consistency %v / %v", lin["consistency"], stale["consistency"])
		}
		for _, p := range []map[string]any{lin, stale} {
			if s, _ := p["as_of"].(string); !rfc3339ms.MatchString(s) {
				t.Fatalf("as_of %q", p["as_of"])
			}
			if num(t, p, "on_hand") != 3 {
				t.Fatalf("on_hand %v", p["on_hand"])
			}
		}
		list := wantStatus(t, n, n.call(t, "GET", "/v1/pools?limit=1&consistency=stale", ""), 200)
		if p := list["pools"].([]any)[0].(map[string]any); p["consistency"] != "stale" {
			t.Fatalf("stale list: %v", p["consistency"])
		}
	})

	t.Run("list_paging", func(t *testing.T) {
		for _, id := range []string{"pg-c", "pg-a", "pg-e", "pg-b", "pg-d"} {
			putPool(t, n, id, `{"on_hand": 1}`, 201)
		}
		var all []string
		for _, p := range wantStatus(t, n, n.call(t, "GET", "/v1/pools", ""), 200)["pools"].([]any) {
			all = append(all, p.(map[string]any)["id"].(string))
		}
		if !slices.IsSorted(all) || len(all) < 5 {
			t.Fatalf("list not in id order: %v", all)
		}
		var paged []string
		after, pages := "", 0
		for {
			q := "/v1/pools?limit=2"
			if after != "" {
				q += "&after=" + after
			}
			page := wantStatus(t, n, n.call(t, "GET", q, ""), 200)
			pages++
			ps := page["pools"].([]any)
			for _, p := range ps {
				paged = append(paged, p.(map[string]any)["id"].(string))
			}
			if page["has_more"] != true {
				if page["next_after"] != nil {
					t.Fatalf("last page has next_after %v", page["next_after"])
				}
				break
			}
			if len(ps) != 2 || page["next_after"] != paged[len(paged)-1] {
				t.Fatalf("page %d: %d pools, next_after %v", pages, len(ps), page["next_after"])
			}
			after = page["next_after"].(string)
		}
		if !slices.Equal(all, paged) || pages != (len(all)+1)/2 {
			t.Fatalf("paged %v in %d pages, listed %v", paged, pages, all)
		}
		page := wantStatus(t, n, n.call(t, "GET", "/v1/pools?limit=2&after=pg-b", ""), 200)
		ps := page["pools"].([]any)
		if len(ps) != 2 || ps[0].(map[string]any)["id"] != "pg-c" || ps[1].(map[string]any)["id"] != "pg-d" {
			t.Fatalf("after=pg-b: %s", mustJSON(ps))
		}
		// after need not name an existing pool.
		page = wantStatus(t, n, n.call(t, "GET", "/v1/pools?limit=1&after=pg-bb", ""), 200)
		if ps := page["pools"].([]any); len(ps) != 1 || ps[0].(map[string]any)["id"] != "pg-c" {
			t.Fatalf("after=pg-bb: %s", mustJSON(ps))
		}
		page = wantStatus(t, n, n.call(t, "GET", "/v1/pools?after=zzz", ""), 200)
		if ps := page["pools"].([]any); len(ps) != 0 || page["has_more"] != false || page["next_after"] != nil {
			t.Fatalf("past the end: %s", mustJSON(page))
		}
		for _, q := range []string{"limit=0", "limit=-1", "limit=1001", "limit=x", "limit=1.5", "after=a%20b", "after=%C3%A9"} {
			wantError(t, n, n.call(t, "GET", "/v1/pools?"+q, ""), 400, "invalid_argument")
		}
		wantStatus(t, n, n.call(t, "GET", "/v1/pools?limit=1000", ""), 200)
	})

	t.Run("reservation_life", func(t *testing.T) {
		putPool(t, n, "life", `{"on_hand": 10, "max_extensions": 2}`, 201)
		r := reserve(t, n, `{"buyer":"l1","lines":[{"pool":"life","qty":2}],"ttl_ms":60000}`)
		id, _ := r["id"].(string)
		if !strings.HasPrefix(id, "r_") || r["buyer"] != "l1" || r["state"] != "active" || r["position"] != nil ||
			num(t, r, "extensions") != 0 || !slices.Equal(lineStates(t, r), []string{"held"}) {
			t.Fatalf("new reservation: %s", mustJSON(r))
		}
		if _, ok := r["position"]; !ok {
			t.Fatalf("position missing (want null): %s", mustJSON(r))
		}
		created, err1 := time.Parse(time.RFC3339Nano, r["created_at"].(string))
		expires, err2 := time.Parse(time.RFC3339Nano, r["expires_at"].(string))
		if err1 != nil || err2 != nil || expires.Sub(created) != 60*time.Second ||
			!rfc3339ms.MatchString(r["created_at"].(string)) || !rfc3339ms.MatchString(r["expires_at"].(string)) {
			t.Fatalf("times: %v %v", r["created_at"], r["expires_at"])
		}
		if c := counts(t, n, "life"); c != [4]int64{2, 0, 10, 8} {
			t.Fatalf("pool after reserve: %v", c)
		}
		g := wantStatus(t, n, n.call(t, "GET", "/v1/reservations/"+id, ""), 200)
		if !reflect.DeepEqual(g, r) {
			t.Fatalf("GET %s differs from the reserve answer:\n%s\n%s", id, mustJSON(g), mustJSON(r))
		}
		g = wantStatus(t, n, n.call(t, "GET", "/v1/reservations/"+id+"?consistency=stale", ""), 200)
		if g["id"] != id {
			t.Fatalf("stale GET: %s", mustJSON(g))
		}
		e := wantStatus(t, n, n.call(t, "POST", "/v1/reservations/"+id+"/extend", `{"ttl_ms": 120000}`), 200)
		newExp, _ := time.Parse(time.RFC3339Nano, e["expires_at"].(string))
		if num(t, e, "extensions") != 1 || !newExp.After(expires) || e["state"] != "active" {
			t.Fatalf("extend: %s", mustJSON(e))
		}
		// Extensions never pass created_at + max_hold_ttl_ms (900 s).
		e = wantStatus(t, n, n.call(t, "POST", "/v1/reservations/"+id+"/extend", `{"ttl_ms": 2592000000}`), 200)
		capExp, _ := time.Parse(time.RFC3339Nano, e["expires_at"].(string))
		if capExp.Sub(created) != 900*time.Second || num(t, e, "extensions") != 2 {
			t.Fatalf("capped extend: %s", mustJSON(e))
		}
		c := wantStatus(t, n, n.call(t, "POST", "/v1/reservations/"+id+"/confirm", ""), 200)
		if c["state"] != "confirmed" || !slices.Equal(lineStates(t, c), []string{"sold"}) {
			t.Fatalf("confirm: %s", mustJSON(c))
		}
		c2 := wantStatus(t, n, n.call(t, "POST", "/v1/reservations/"+id+"/confirm", `{}`), 200)
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("second confirm differs:\n%s\n%s", mustJSON(c), mustJSON(c2))
		}
		if cs := counts(t, n, "life"); cs != [4]int64{0, 2, 10, 8} {
			t.Fatalf("pool after confirm: %v", cs)
		}
		g = wantStatus(t, n, n.call(t, "GET", "/v1/reservations/"+id, ""), 200)
		if g["state"] != "confirmed" {
			t.Fatalf("GET after confirm: %s", mustJSON(g))
		}
		// confirm and release take no fields.
		wantError(t, n, n.call(t, "POST", "/v1/reservations/"+id+"/confirm", `{"x":1}`), 400, "invalid_argument")
	})

	t.Run("release", func(t *testing.T) {
		putPool(t, n, "rel", `{"on_hand": 4, "per_buyer_limit": 3}`, 201)
		id := reserve(t, n, `{"buyer":"r1","lines":[{"pool":"rel","qty":3}]}`)["id"].(string)
		if c := counts(t, n, "rel"); c != [4]int64{3, 0, 4, 1} {
			t.Fatalf("pool after reserve: %v", c)
		}
		r := wantStatus(t, n, n.call(t, "POST", "/v1/reservations/"+id+"/release", ""), 200)
		if r["state"] != "released" || !slices.Equal(lineStates(t, r), []string{"returned"}) {
			t.Fatalf("release: %s", mustJSON(r))
		}
		if c := counts(t, n, "rel"); c != [4]int64{0, 0, 4, 4} {
			t.Fatalf("units not back: %v", c)
		}
		r2 := wantStatus(t, n, n.call(t, "POST", "/v1/reservations/"+id+"/release", ""), 200)
		if !reflect.DeepEqual(r, r2) {
			t.Fatalf("second release differs")
		}
		// The buyer's usage went back too: the limit allows 3 again.
		reserve(t, n, `{"buyer":"r1","lines":[{"pool":"rel","qty":3}]}`)
	})

	t.Run("idempotent_replay", func(t *testing.T) {
		putPool(t, n, "idem", `{"on_hand": 10}`, 201)
		body := `{"buyer":"k1","lines":[{"pool":"idem","qty":2}]}`
		a := n.call(t, "POST", "/v1/reservations", body, "Idempotency-Key", "idem-1")
		wantStatus(t, n, a, 201)
		time.Sleep(5 * time.Millisecond)
		for range 2 {
			b := n.call(t, "POST", "/v1/reservations", body, "Idempotency-Key", "idem-1")
			if b.status != a.status || !bytes.Equal(a.body, b.body) {
				t.Fatalf("replay differs:\n%d %s\n%d %s", a.status, a.body, b.status, b.body)
			}
		}
		if c := counts(t, n, "idem"); c[0] != 2 {
			t.Fatalf("replays reserved again: held %d", c[0])
		}
		id := a.json(t)["id"].(string)

		// A replayed refusal is the same refusal, even once units are back.
		refused := n.call(t, "POST", "/v1/reservations", `{"buyer":"k2","lines":[{"pool":"idem","qty":9}]}`, "Idempotency-Key", "idem-2")
		wantError(t, n, refused, 409, "sold_out")
		wantStatus(t, n, n.call(t, "POST", "/v1/reservations/"+id+"/release", ""), 200)
		again := n.call(t, "POST", "/v1/reservations", `{"buyer":"k2","lines":[{"pool":"idem","qty":9}]}`, "Idempotency-Key", "idem-2")
		if again.status != 409 || !bytes.Equal(refused.body, again.body) {
			t.Fatalf("replayed refusal differs: %d %s", again.status, again.body)
		}
		if c := counts(t, n, "idem"); c[0] != 0 {
			t.Fatalf("held %d", c[0])
		}

		// Transitions, adjust and PUT replay byte for byte too.
		id2 := reserve(t, n, `{"buyer":"k3","lines":[{"pool":"idem","qty":1}]}`)["id"].(string)
		for _, c := range []struct{ method, path, body, key string }{
			{"POST", "/v1/reservations/" + id2 + "/extend", `{"ttl_ms": 60000}`, "idem-3"},
			{"POST", "/v1/reservations/" + id2 + "/confirm", ``, "idem-4"},
			{"POST", "/v1/pools/idem/adjust", `{"delta": 5}`, "idem-5"},
			{"PUT", "/v1/pools/idem-new", `{"on_hand": 5}`, "idem-6"},
		} {
			first := n.call(t, c.method, c.path, c.body, "Idempotency-Key", c.key)
			if first.status >= 300 {
				t.Fatalf("%s %s: %d %s", c.method, c.path, first.status, first.body)
			}
			time.Sleep(20 * time.Millisecond) // let the log clock move
			second := n.call(t, c.method, c.path, c.body, "Idempotency-Key", c.key)
			if second.status != first.status || !bytes.Equal(first.body, second.body) {
				t.Errorf("%s %s replay differs:\n%d %s\n%d %s", c.method, c.path, first.status, first.body, second.status, second.body)
			}
		}
		if c := counts(t, n, "idem"); c != [4]int64{0, 1, 15, 14} {
			t.Fatalf("adjust replayed twice? %v", c)
		}
		// A key is not scoped by endpoint, and the same key on a GET is ignored.
		wantStatus(t, n, n.call(t, "GET", "/v1/pools/idem", "", "Idempotency-Key", "idem-1"), 200)
	})

	t.Run("partial", func(t *testing.T) {
		putPool(t, n, "pa-a", `{"on_hand": 5}`, 201)
		putPool(t, n, "pa-b", `{"on_hand": 1}`, 201)
		lines := `"lines":[{"pool":"pa-a","qty":2},{"pool":"pa-b","qty":2}]`
		d := wantError(t, n, n.call(t, "POST", "/v1/reservations", `{"buyer":"p1",`+lines+`}`), 409, "sold_out")
		if got := lineStates(t, d); !slices.Equal(got, []string{"available", "sold_out"}) {
			t.Fatalf("all_or_nothing details: %v", got)
		}
		d = wantError(t, n, n.call(t, "POST", "/v1/reservations", `{"buyer":"p1","mode":"all_or_nothing",`+lines+`}`), 409, "sold_out")
		if c := counts(t, n, "pa-a"); c[0] != 0 {
			t.Fatalf("all_or_nothing held %d", c[0])
		}
		r := reserve(t, n, `{"buyer":"p1","mode":"partial",`+lines+`}`)
		if got := lineStates(t, r); !slices.Equal(got, []string{"held", "sold_out"}) || r["state"] != "active" {
			t.Fatalf("partial: %s", mustJSON(r))
		}
		if a, b := counts(t, n, "pa-a"), counts(t, n, "pa-b"); a[0] != 2 || b[0] != 0 {
			t.Fatalf("partial held %v / %v", a, b)
		}
		// Partial with nothing holdable is refused.
		wantError(t, n, n.call(t, "POST", "/v1/reservations", `{"buyer":"p2","mode":"partial","lines":[{"pool":"pa-b","qty":2}]}`), 409, "sold_out")
		// Confirm sells only the held line; release returns only it.
		c := wantStatus(t, n, n.call(t, "POST", "/v1/reservations/"+r["id"].(string)+"/confirm", ""), 200)
		if got := lineStates(t, c); !slices.Equal(got, []string{"sold", "sold_out"}) {
			t.Fatalf("confirmed partial: %v", got)
		}
		if a, b := counts(t, n, "pa-a"), counts(t, n, "pa-b"); a != [4]int64{0, 2, 5, 3} || b != [4]int64{0, 0, 1, 1} {
			t.Fatalf("after confirm %v / %v", a, b)
		}
	})

	t.Run("bundle_same_pool", func(t *testing.T) {
		putPool(t, n, "bun", `{"on_hand": 3}`, 201)
		d := wantError(t, n, n.call(t, "POST", "/v1/reservations", `{"buyer":"x","lines":[{"pool":"bun","qty":2},{"pool":"bun","qty":2}]}`), 409, "sold_out")
		if got := lineStates(t, d); !slices.Equal(got, []string{"available", "sold_out"}) {
			t.Fatalf("bundle details: %v", got)
		}
		if c := counts(t, n, "bun"); c[0] != 0 {
			t.Fatalf("refused bundle held %d", c[0])
		}
		r := reserve(t, n, `{"buyer":"x","lines":[{"pool":"bun","qty":2},{"pool":"bun","qty":1}]}`)
		if got := lineStates(t, r); !slices.Equal(got, []string{"held", "held"}) {
			t.Fatalf("bundle: %v", got)
		}
		if c := counts(t, n, "bun"); c != [4]int64{3, 0, 3, 0} {
			t.Fatalf("bundle pool: %v", c)
		}
		wantStatus(t, n, n.call(t, "POST", "/v1/reservations/"+r["id"].(string)+"/release", ""), 200)
		if c := counts(t, n, "bun"); c != [4]int64{0, 0, 3, 3} {
			t.Fatalf("bundle released: %v", c)
		}
	})

	t.Run("escaped_pool_id", func(t *testing.T) {
		p := putPool(t, n, "a%2Fb", `{"on_hand": 4}`, 201)
		if p["id"] != "a/b" {
			t.Fatalf("id %v", p["id"])
		}
		if p = getPool(t, n, "a%2Fb"); p["id"] != "a/b" || num(t, p, "on_hand") != 4 {
			t.Fatalf("GET a%%2Fb: %s", mustJSON(p))
		}
		if p = getPool(t, n, "a%2fb?consistency=stale"); p["id"] != "a/b" {
			t.Fatalf("lower-case escape: %s", mustJSON(p))
		}
		p = wantStatus(t, n, n.call(t, "POST", "/v1/pools/a%2Fb/adjust", `{"delta": 3}`), 200)
		if num(t, p, "on_hand") != 7 {
			t.Fatalf("adjust: %s", mustJSON(p))
		}
		reserve(t, n, `{"buyer":"s","lines":[{"pool":"a/b","qty":2}]}`)
		if c := counts(t, n, "a%2Fb"); c != [4]int64{2, 0, 7, 5} {
			t.Fatalf("pool a/b: %v", c)
		}
		putPool(t, n, "a%2Fb", `{"on_hand": 9}`, 200)
		page := wantStatus(t, n, n.call(t, "GET", "/v1/pools?after=a&limit=1", ""), 200)
		if ps := page["pools"].([]any); len(ps) != 1 || ps[0].(map[string]any)["id"] != "a/b" {
			t.Fatalf("list after=a: %s", mustJSON(page))
		}
		page = wantStatus(t, n, n.call(t, "GET", "/v1/pools?after=a%2Fb&limit=1", ""), 200)
		if ps := page["pools"].([]any); len(ps) == 1 && ps[0].(map[string]any)["id"] == "a/b" {
			t.Fatalf("after=a/b lists a/b again")
		}
		// Unescaped, the slash is a path separator: no such endpoint.
		wantError(t, n, n.call(t, "GET", "/v1/pools/a/b", ""), 404, "not_found")
		// Other escapes of valid characters name the same pool.
		if p = getPool(t, n, "%61%2F%62"); p["id"] != "a/b" {
			t.Fatalf("fully escaped: %s", mustJSON(p))
		}
	})

	t.Run("id_length", func(t *testing.T) {
		id128 := strings.Repeat("p", 128)
		putPool(t, n, id128, `{"on_hand": 1}`, 201)
		buyer128 := strings.Repeat("b", 128)
		key128 := strings.Repeat("k", 128)
		r := reserve(t, n, `{"buyer":"`+buyer128+`","lines":[{"pool":"`+id128+`","qty":1}]}`, "Idempotency-Key", key128)
		if r["buyer"] != buyer128 || r["lines"].([]any)[0].(map[string]any)["pool"] != id128 {
			t.Fatalf("128-byte ids: %s", mustJSON(r))
		}
		allChars := "AZaz09._:@/-"
		putPool(t, n, strings.ReplaceAll(allChars, "/", "%2F"), `{"on_hand": 1}`, 201)
		reserve(t, n, `{"buyer":"`+allChars+`","lines":[{"pool":"`+allChars+`","qty":1}]}`, "Idempotency-Key", allChars)
	})
}

// ---- 2. bad inputs change nothing ----

func TestContractBadInputs(t *testing.T) {
	n := startCluster(t, 1)[0]
	// State to protect: a pool with held and sold units, an idle pool.
	putPool(t, n, "bad", `{"on_hand": 100, "per_buyer_limit": 50, "max_extensions": 2}`, 201)
	putPool(t, n, "bad2", `{"on_hand": 10}`, 201)
	first := reserve(t, n, `{"buyer":"setup","lines":[{"pool":"bad","qty":5}]}`)
	wantStatus(t, n, n.call(t, "POST", "/v1/reservations/"+first["id"].(string)+"/confirm", ""), 200)
	reserve(t, n, `{"buyer":"setup","lines":[{"pool":"bad","qty":3}]}`)
	// Reservation ids are handed out in sequence: r_1, r_2, ...
	next := uint64(3)
	if first["id"] != "r_1" {
		t.Fatalf("first reservation id %v, want r_1", first["id"])
	}

	line := `{"pool":"bad","qty":1}`
	resv := func(buyer, lines string) string { return `{"buyer":` + buyer + `,"lines":[` + lines + `]}` }
	qty := func(q string) string { return resv(`"u"`, `{"pool":"bad","qty":`+q+`}`) }
	many := func(k int) string {
		ls := make([]string, k)
		for i := range ls {
			ls[i] = line
		}
		return strings.Join(ls, ",")
	}
	long := strings.Repeat("a", 129)
	over := `{"on_hand": 1}` + strings.Repeat(" ", 1<<20)

	type row struct {
		name, method, path, body string
		headers                  []string
		status                   int
		code                     string
	}
	const R, P, A = "/v1/reservations", "/v1/pools/bad", "/v1/pools/bad/adjust"
	rows := []row{
		// POST /v1/reservations
		{"r/empty body", "POST", R, ``, nil, 400, "invalid_argument"},
		{"r/open brace", "POST", R, `{`, nil, 400, "invalid_argument"},
		{"r/array", "POST", R, `[]`, nil, 400, "invalid_argument"},
		{"r/string", "POST", R, `"x"`, nil, 400, "invalid_argument"},
		{"r/number", "POST", R, `1`, nil, 400, "invalid_argument"},
		{"r/null", "POST", R, `null`, nil, 400, "invalid_argument"},
		{"r/empty object", "POST", R, `{}`, nil, 400, "invalid_argument"},
		{"r/unknown field", "POST", R, `{"buyer":"u","lines":[` + line + `],"coupon":"x"}`, nil, 400, "invalid_argument"},
		{"r/unknown line field", "POST", R, resv(`"u"`, `{"pool":"bad","qty":1,"sku":"x"}`), nil, 400, "invalid_argument"},
		{"r/trailing garbage", "POST", R, resv(`"u"`, line) + ` x`, nil, 400, "invalid_argument"},
		{"r/trailing object", "POST", R, resv(`"u"`, line) + `{}`, nil, 400, "invalid_argument"},
		{"r/trailing brace", "POST", R, resv(`"u"`, line) + `}`, nil, 400, "invalid_argument"},
		{"r/qty 0", "POST", R, qty("0"), nil, 400, "invalid_argument"},
		{"r/qty -1", "POST", R, qty("-1"), nil, 400, "invalid_argument"},
		{"r/qty 1000001", "POST", R, qty("1000001"), nil, 400, "invalid_argument"},
		{"r/qty 2^63", "POST", R, qty("9223372036854775808"), nil, 400, "invalid_argument"},
		{"r/qty -2^63-1", "POST", R, qty("-9223372036854775809"), nil, 400, "invalid_argument"},
		{"r/qty 1.5", "POST", R, qty("1.5"), nil, 400, "invalid_argument"},
		{"r/qty 1e0", "POST", R, qty("1e0"), nil, 400, "invalid_argument"},
		{"r/qty string", "POST", R, qty(`"1"`), nil, 400, "invalid_argument"},
		{"r/qty null", "POST", R, qty(`null`), nil, 400, "invalid_argument"},
		{"r/qty missing", "POST", R, resv(`"u"`, `{"pool":"bad"}`), nil, 400, "invalid_argument"},
		{"r/buyer missing", "POST", R, `{"lines":[` + line + `]}`, nil, 400, "invalid_argument"},
		{"r/buyer empty", "POST", R, resv(`""`, line), nil, 400, "invalid_argument"},
		{"r/buyer 129 bytes", "POST", R, resv(`"`+long+`"`, line), nil, 400, "invalid_argument"},
		{"r/buyer space", "POST", R, resv(`"a b"`, line), nil, 400, "invalid_argument"},
		{"r/buyer percent", "POST", R, resv(`"a%20b"`, line), nil, 400, "invalid_argument"},
		{"r/buyer unicode", "POST", R, resv(`"bjørn"`, line), nil, 400, "invalid_argument"},
		{"r/buyer NUL", "POST", R, resv(`"a\u0000b"`, line), nil, 400, "invalid_argument"},
		{"r/buyer invalid UTF-8", "POST", R, resv("\"a\xffb\"", line), nil, 400, "invalid_argument"},
		{"r/buyer number", "POST", R, resv(`7`, line), nil, 400, "invalid_argument"},
		{"r/pool 129 bytes", "POST", R, resv(`"u"`, `{"pool":"`+long+`","qty":1}`), nil, 400, "invalid_argument"},
		{"r/pool space", "POST", R, resv(`"u"`, `{"pool":"ba d","qty":1}`), nil, 400, "invalid_argument"},
		{"r/pool percent", "POST", R, resv(`"u"`, `{"pool":"bad%","qty":1}`), nil, 400, "invalid_argument"},
		{"r/pool unicode", "POST", R, resv(`"u"`, `{"pool":"bäd","qty":1}`), nil, 400, "invalid_argument"},
		{"r/pool NUL", "POST", R, resv(`"u"`, `{"pool":"bad\u0000","qty":1}`), nil, 400, "invalid_argument"},
		{"r/pool invalid UTF-8", "POST", R, resv(`"u"`, "{\"pool\":\"bad\xc3\",\"qty\":1}"), nil, 400, "invalid_argument"},
		{"r/pool empty", "POST", R, resv(`"u"`, `{"pool":"","qty":1}`), nil, 400, "invalid_argument"},
		{"r/pool missing", "POST", R, resv(`"u"`, `{"qty":1}`), nil, 400, "invalid_argument"},
		{"r/no such pool", "POST", R, resv(`"u"`, `{"pool":"nope","qty":1}`), nil, 404, "not_found"},
		{"r/lines empty", "POST", R, resv(`"u"`, ``), nil, 400, "invalid_argument"},
		{"r/lines missing", "POST", R, `{"buyer":"u"}`, nil, 400, "invalid_argument"},
		{"r/lines null", "POST", R, `{"buyer":"u","lines":null}`, nil, 400, "invalid_argument"},
		{"r/lines object", "POST", R, `{"buyer":"u","lines":` + line + `}`, nil, 400, "invalid_argument"},
		{"r/101 lines", "POST", R, resv(`"u"`, many(101)), nil, 400, "invalid_argument"},
		{"r/ttl_ms 0", "POST", R, `{"buyer":"u","lines":[` + line + `],"ttl_ms":0}`, nil, 400, "invalid_argument"},
		{"r/ttl_ms -5", "POST", R, `{"buyer":"u","lines":[` + line + `],"ttl_ms":-5}`, nil, 400, "invalid_argument"},
		{"r/ttl_ms 2592000001", "POST", R, `{"buyer":"u","lines":[` + line + `],"ttl_ms":2592000001}`, nil, 400, "invalid_argument"},
		{"r/ttl_ms over the pool max", "POST", R, `{"buyer":"u","lines":[` + line + `],"ttl_ms":900001}`, nil, 400, "invalid_argument"},
		{"r/ttl_ms string", "POST", R, `{"buyer":"u","lines":[` + line + `],"ttl_ms":"5"}`, nil, 400, "invalid_argument"},
		{"r/mode bogus", "POST", R, `{"buyer":"u","lines":[` + line + `],"mode":"bogus"}`, nil, 400, "invalid_argument"},
		{"r/mode empty", "POST", R, `{"buyer":"u","lines":[` + line + `],"mode":""}`, nil, 400, "invalid_argument"},
		{"r/mode case", "POST", R, `{"buyer":"u","lines":[` + line + `],"mode":"PARTIAL"}`, nil, 400, "invalid_argument"},
		{"r/wait without waitlist", "POST", R, `{"buyer":"u","lines":[` + line + `],"wait":true}`, nil, 400, "invalid_argument"},
		{"r/wait string", "POST", R, `{"buyer":"u","lines":[` + line + `],"wait":"yes"}`, nil, 400, "invalid_argument"},
		{"r/key bad char", "POST", R, resv(`"u"`, line), []string{"Idempotency-Key", "a b"}, 400, "invalid_argument"},
		{"r/key percent", "POST", R, resv(`"u"`, line), []string{"Idempotency-Key", "a%b"}, 400, "invalid_argument"},
		{"r/key 129 bytes", "POST", R, resv(`"u"`, line), []string{"Idempotency-Key", long}, 400, "invalid_argument"},
		{"r/key unicode", "POST", R, resv(`"u"`, line), []string{"Idempotency-Key", "kéy"}, 400, "invalid_argument"},
		{"r/over 1 MiB", "POST", R, resv(`"u"`, line) + strings.Repeat(" ", 1<<20), nil, 413, "payload_too_large"},
		{"r/sold out", "POST", R, resv(`"u"`, `{"pool":"bad2","qty":11}`), nil, 409, "sold_out"},
		{"r/buyer limit", "POST", R, resv(`"setup"`, `{"pool":"bad","qty":43}`), nil, 409, "buyer_limit"},

		// PUT /v1/pools/{id} on a pool with state
		{"p/empty body", "PUT", P, ``, nil, 400, "invalid_argument"},
		{"p/open brace", "PUT", P, `{`, nil, 400, "invalid_argument"},
		{"p/array", "PUT", P, `[]`, nil, 400, "invalid_argument"},
		{"p/string", "PUT", P, `"x"`, nil, 400, "invalid_argument"},
		{"p/null", "PUT", P, `null`, nil, 400, "invalid_argument"},
		{"p/unknown field", "PUT", P, `{"on_hand":100,"colour":"red"}`, nil, 400, "invalid_argument"},
		{"p/unknown waitlist field", "PUT", P, `{"on_hand":100,"waitlist":{"size":1}}`, nil, 400, "invalid_argument"},
		{"p/trailing garbage", "PUT", P, `{"on_hand":100} 1`, nil, 400, "invalid_argument"},
		{"p/on_hand missing", "PUT", P, `{"per_buyer_limit":1}`, nil, 400, "invalid_argument"},
		{"p/on_hand null", "PUT", P, `{"on_hand":null}`, nil, 400, "invalid_argument"},
		{"p/on_hand -1", "PUT", P, `{"on_hand":-1}`, nil, 400, "invalid_argument"},
		{"p/on_hand 1000000000001", "PUT", P, `{"on_hand":1000000000001}`, nil, 400, "invalid_argument"},
		{"p/on_hand 2^63", "PUT", P, `{"on_hand":9223372036854775808}`, nil, 400, "invalid_argument"},
		{"p/on_hand 1.5", "PUT", P, `{"on_hand":1.5}`, nil, 400, "invalid_argument"},
		{"p/on_hand string", "PUT", P, `{"on_hand":"100"}`, nil, 400, "invalid_argument"},
		{"p/on_hand below held+sold", "PUT", P, `{"on_hand":7}`, nil, 409, "invalid_state"},
		{"p/per_buyer_limit -1", "PUT", P, `{"on_hand":100,"per_buyer_limit":-1}`, nil, 400, "invalid_argument"},
		{"p/hold_ttl_ms 0", "PUT", P, `{"on_hand":100,"hold_ttl_ms":0}`, nil, 400, "invalid_argument"},
		{"p/hold_ttl_ms over max", "PUT", P, `{"on_hand":100,"hold_ttl_ms":2592000001}`, nil, 400, "invalid_argument"},
		{"p/max_hold below hold", "PUT", P, `{"on_hand":100,"hold_ttl_ms":5000,"max_hold_ttl_ms":4000}`, nil, 400, "invalid_argument"},
		{"p/max_extensions -1", "PUT", P, `{"on_hand":100,"max_extensions":-1}`, nil, 400, "invalid_argument"},
		{"p/max_extensions 1001", "PUT", P, `{"on_hand":100,"max_extensions":1001}`, nil, 400, "invalid_argument"},
		{"p/mode bogus", "PUT", P, `{"on_hand":100,"mode":"bogus"}`, nil, 400, "invalid_argument"},
		{"p/draw closes before it opens", "PUT", P, `{"on_hand":100,"mode":"draw","draw":{"opens_at":"2030-01-02T00:00:00Z","closes_at":"2030-01-01T00:00:00Z","seed":"s"}}`, nil, 400, "invalid_argument"},
		{"p/draw without a window", "PUT", P, `{"on_hand":100,"mode":"draw"}`, nil, 400, "invalid_argument"},
		{"p/demand warm_rps 0", "PUT", P, `{"on_hand":100,"demand_thresholds":{"warm_rps":0}}`, nil, 400, "invalid_argument"},
		{"p/demand unknown field", "PUT", P, `{"on_hand":100,"demand_thresholds":{"cold_rps":1}}`, nil, 400, "invalid_argument"},
		{"p/draw bad time", "PUT", P, `{"on_hand":100,"draw":{"opens_at":"tomorrow","closes_at":"2030-01-02T00:00:00Z"}}`, nil, 400, "invalid_argument"},
		{"p/draw seed 129 bytes", "PUT", P, `{"on_hand":100,"draw":{"opens_at":"2030-01-01T00:00:00Z","closes_at":"2030-01-02T00:00:00Z","seed":"` + long + `"}}`, nil, 400, "invalid_argument"},
		{"p/waitlist wait_ttl 0", "PUT", P, `{"on_hand":100,"waitlist":{"enabled":true,"wait_ttl_ms":0}}`, nil, 400, "invalid_argument"},
		{"p/waitlist offer 0", "PUT", P, `{"on_hand":100,"waitlist":{"offer_ttl_ms":0}}`, nil, 400, "invalid_argument"},
		{"p/id 129 bytes", "PUT", "/v1/pools/" + long, `{"on_hand":1}`, nil, 400, "invalid_argument"},
		{"p/id space", "PUT", "/v1/pools/a%20b", `{"on_hand":1}`, nil, 400, "invalid_argument"},
		{"p/id percent", "PUT", "/v1/pools/a%25b", `{"on_hand":1}`, nil, 400, "invalid_argument"},
		{"p/id unicode", "PUT", "/v1/pools/%C3%A9", `{"on_hand":1}`, nil, 400, "invalid_argument"},
		{"p/id NUL", "PUT", "/v1/pools/a%00", `{"on_hand":1}`, nil, 400, "invalid_argument"},
		{"p/id invalid UTF-8", "PUT", "/v1/pools/a%FF", `{"on_hand":1}`, nil, 400, "invalid_argument"},
		{"p/id bad escape", "PUT", "/v1/pools/a%zz", `{"on_hand":1}`, nil, 400, "invalid_argument"},
		{"p/new pool bad body", "PUT", "/v1/pools/fresh", `{"on_hand":-1}`, nil, 400, "invalid_argument"},
		{"p/key bad char", "PUT", "/v1/pools/fresh", `{"on_hand":1}`, []string{"Idempotency-Key", "a,b"}, 400, "invalid_argument"},
		{"p/key 129 bytes", "PUT", P, `{"on_hand":100}`, []string{"Idempotency-Key", long}, 400, "invalid_argument"},
		{"p/over 1 MiB", "PUT", P, over, nil, 413, "payload_too_large"},

		// POST /v1/pools/{id}/adjust
		{"a/empty body", "POST", A, ``, nil, 400, "invalid_argument"},
		{"a/open brace", "POST", A, `{`, nil, 400, "invalid_argument"},
		{"a/array", "POST", A, `[1]`, nil, 400, "invalid_argument"},
		{"a/null", "POST", A, `null`, nil, 400, "invalid_argument"},
		{"a/delta missing", "POST", A, `{}`, nil, 400, "invalid_argument"},
		{"a/delta null", "POST", A, `{"delta":null}`, nil, 400, "invalid_argument"},
		{"a/delta 1.5", "POST", A, `{"delta":1.5}`, nil, 400, "invalid_argument"},
		{"a/delta string", "POST", A, `{"delta":"1"}`, nil, 400, "invalid_argument"},
		{"a/delta 2^63", "POST", A, `{"delta":9223372036854775808}`, nil, 400, "invalid_argument"},
		{"a/delta over max stock", "POST", A, `{"delta":1000000000001}`, nil, 400, "invalid_argument"},
		{"a/delta under -max stock", "POST", A, `{"delta":-1000000000001}`, nil, 400, "invalid_argument"},
		{"a/on_hand over max stock", "POST", A, `{"delta":1000000000000}`, nil, 400, "invalid_argument"},
		{"a/below held+sold", "POST", A, `{"delta":-93}`, nil, 409, "invalid_state"},
		{"a/unknown field", "POST", A, `{"delta":1,"reason":"x"}`, nil, 400, "invalid_argument"},
		{"a/trailing garbage", "POST", A, `{"delta":1}]`, nil, 400, "invalid_argument"},
		{"a/no such pool", "POST", "/v1/pools/nope/adjust", `{"delta":1}`, nil, 404, "not_found"},
		{"a/id 129 bytes", "POST", "/v1/pools/" + long + "/adjust", `{"delta":1}`, nil, 400, "invalid_argument"},
		{"a/id space", "POST", "/v1/pools/ba%20d/adjust", `{"delta":1}`, nil, 400, "invalid_argument"},
		{"a/id unicode", "POST", "/v1/pools/b%C3%A4d/adjust", `{"delta":1}`, nil, 400, "invalid_argument"},
		{"a/key bad char", "POST", A, `{"delta":1}`, []string{"Idempotency-Key", "k\x01"}, 400, "invalid_argument"},
		{"a/key 129 bytes", "POST", A, `{"delta":1}`, []string{"Idempotency-Key", long}, 400, "invalid_argument"},
		{"a/over 1 MiB", "POST", A, `{"delta":1}` + strings.Repeat(" ", 1<<20), nil, 413, "payload_too_large"},
	}

	before := allPools(t, n)
	if len(before) != 2 || num(t, before["bad"], "held") != 3 || num(t, before["bad"], "sold") != 5 {
		t.Fatalf("setup: %s", mustJSON(before))
	}
	for _, c := range rows {
		t.Run(c.name, func(t *testing.T) {
			var r response
			if len(c.body) > 1<<20 {
				r = rawDo(t, n, c.method, c.path, []byte(c.body), c.headers...)
			} else {
				r = n.call(t, c.method, c.path, c.body, c.headers...)
			}
			wantError(t, n, r, c.status, c.code)
			if after := allPools(t, n); !reflect.DeepEqual(before, after) {
				t.Fatalf("pools changed:\nbefore %s\nafter  %s", mustJSON(before), mustJSON(after))
			}
			wantError(t, n, n.call(t, "GET", "/v1/reservations/r_"+strconv.FormatUint(next, 16), ""), 404, "not_found")
		})
	}
	// The next reservation gets the next id: none was created above.
	r := reserve(t, n, resv(`"u"`, line))
	if want := "r_" + strconv.FormatUint(next, 16); r["id"] != want {
		t.Fatalf("next reservation %v, want %s", r["id"], want)
	}
	// The keys refused above were not consumed.
	wantStatus(t, n, n.call(t, "POST", A, `{"delta":1}`, "Idempotency-Key", "k1"), 200)
}

// ---- 3. health, cluster, metrics ----

func TestContractHealthAndMetrics(t *testing.T) {
	n := startCluster(t, 1)[0]

	t.Run("health", func(t *testing.T) {
		h := wantStatus(t, n, n.call(t, "GET", "/v1/health", ""), 200)
		if h["status"] != "ok" || h["node"] != n.id || h["leader"] != n.id {
			t.Fatalf("health: %s", mustJSON(h))
		}
	})

	t.Run("cluster", func(t *testing.T) {
		// Make sure something was committed.
		putPool(t, n, "hm", `{"on_hand": 1}`, 201)
		c := wantStatus(t, n, n.call(t, "GET", "/v1/cluster", ""), 200)
		for _, k := range []string{"members", "leader", "term", "commit_index", "applied_index"} {
			if _, ok := c[k]; !ok {
				t.Fatalf("cluster lacks %q: %s", k, mustJSON(c))
			}
		}
		if c["leader"] != n.id || num(t, c, "term") < 1 || num(t, c, "commit_index") < 1 || num(t, c, "applied_index") < 1 {
			t.Fatalf("cluster: %s", mustJSON(c))
		}
		ms, _ := c["members"].([]any)
		if len(ms) != 1 {
			t.Fatalf("members: %v", c["members"])
		}
		m := ms[0].(map[string]any)
		if m["id"] != n.id || m["leader"] != true || m["api_addr"] != n.httpAddr || m["raft_addr"] != n.raftAddr {
			t.Fatalf("member: %s", mustJSON(m))
		}
		if s, _ := c["log_clock"].(string); !rfc3339ms.MatchString(s) {
			t.Fatalf("log_clock %v", c["log_clock"])
		}
	})

	t.Run("metrics", func(t *testing.T) {
		id := reserve(t, n, `{"buyer":"m","lines":[{"pool":"hm","qty":1}]}`)["id"].(string)
		r := n.call(t, "GET", "/metrics", "")
		if r.status != 200 || r.header.Get("X-Holdfast-Node") != n.id {
			t.Fatalf("metrics: %d %v", r.status, r.header)
		}
		if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Fatalf("metrics Content-Type %q", ct)
		}
		body := string(r.body)
		for _, want := range []string{
			`holdfast_http_requests_total{route="reserve",status="201"} 1`,
			"holdfast_http_request_seconds_bucket",
			"holdfast_raft_apply_seconds_count",
			"holdfast_active_holds 1",
			`holdfast_reservations_total{outcome="held"} 1`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics lacks %q", want)
			}
		}
		wantStatus(t, n, n.call(t, "POST", "/v1/reservations/"+id+"/release", ""), 200)
		if body := string(n.call(t, "GET", "/metrics", "").body); !strings.Contains(body, "holdfast_active_holds 0") {
			t.Errorf("active holds not back to 0")
		}
	})
}

// TestFirstLinearizableReadIsPrompt: the first linearizable read of a term
// must not wait for unrelated traffic. raftstore.ReadBarrier issues one
// raft.Barrier per term and then waits until fsm.applied reaches the
// commit index, but hashicorp/raft never hands LogBarrier (or LogNoop)
// entries to a BatchingFSM, so fsm.applied stays below the barrier's index
// until the next command entry: the leader's freshness tick, up to
// FreshnessMs (1 s) later. Known failing until raftstore is fixed.
func TestFirstLinearizableReadIsPrompt(t *testing.T) {
	n := startCluster(t, 1)[0]
	putPool(t, n, "first-read", `{"on_hand": 1}`, 201)
	start := time.Now()
	getPool(t, n, "first-read")
	if d := time.Since(start); d > 300*time.Millisecond {
		t.Errorf("first linearizable read took %v (raftstore.ReadBarrier waits for fsm.applied to pass a barrier entry the FSM never sees)", d)
	}
	start = time.Now()
	getPool(t, n, "first-read")
	if d := time.Since(start); d > 300*time.Millisecond {
		t.Errorf("second linearizable read took %v", d)
	}
}
