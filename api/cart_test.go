package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Cart tests over HTTP: one real single-node cluster per top-level test
// (Pebble, Raft and HTTP on loopback), plus a 3-node cluster for
// forwarding and replica reads. They check CONTRACT.md's Carts section and
// the decisions in cart/doc.go and docs/design.md ("Carts").

// ---- helpers ----

// newCart creates a cart and returns it.
func cartNew(t testing.TB, n *testNode, owner string) map[string]any {
	t.Helper()
	c := wantStatus(t, n, n.call(t, "POST", "/v1/carts", `{"owner":`+mustJSON(owner)+`}`), 201)
	if num(t, c, "version") != 1 || c["state"] != "open" || c["owner"] != owner {
		t.Fatalf("new cart: %v", c)
	}
	return c
}

func cartID(c map[string]any) string { return c["id"].(string) }

// addLine posts a line to a cart and returns the cart (200).
func cartAdd(t testing.TB, n *testNode, cart, body string, headers ...string) map[string]any {
	t.Helper()
	return wantStatus(t, n, n.call(t, "POST", "/v1/carts/"+cart+"/lines", body, headers...), 200)
}

// addSKU adds qty of a plain line (no variant, seller, fulfillment).
func cartAddSKU(t testing.TB, n *testNode, cart, sku string, qty int) map[string]any {
	t.Helper()
	return cartAdd(t, n, cart, fmt.Sprintf(`{"sku":%q,"qty":%d}`, sku, qty))
}

func cartGet(t testing.TB, n *testNode, id string) map[string]any {
	t.Helper()
	return wantStatus(t, n, n.call(t, "GET", "/v1/carts/"+id, ""), 200)
}

func cartLines(t testing.TB, c map[string]any) []map[string]any {
	t.Helper()
	ls, ok := c["lines"].([]any)
	if !ok {
		t.Fatalf("cart has no lines array: %v", c)
	}
	out := make([]map[string]any, len(ls))
	for i, l := range ls {
		out[i] = l.(map[string]any)
	}
	return out
}

// lineKey names a line by its identity: sku, variant and attrs.
func cartLineKey(l map[string]any) string {
	k := l["sku"].(string)
	if v, _ := l["variant"].(string); v != "" {
		k += "/" + v
	}
	if a, _ := l["attrs"].(map[string]any); len(a) > 0 {
		k += mustJSON(a)
	}
	return k
}

// qtys returns each line's qty keyed by lineKey.
func cartQtys(t testing.TB, c map[string]any) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, l := range cartLines(t, c) {
		k := cartLineKey(l)
		if _, dup := out[k]; dup {
			t.Fatalf("two lines %s in %v", k, c)
		}
		out[k] = num(t, l, "qty")
	}
	return out
}

// lineOf returns the line with lineKey k.
func cartLineOf(t testing.TB, c map[string]any, k string) map[string]any {
	t.Helper()
	for _, l := range cartLines(t, c) {
		if cartLineKey(l) == k {
			return l
		}
	}
	t.Fatalf("no line %s in %v", k, c)
	return nil
}

func cartWantQtys(t testing.TB, c map[string]any, want map[string]int64) {
	t.Helper()
	if got := cartQtys(t, c); !reflect.DeepEqual(got, want) {
		t.Fatalf("lines %v, want %v (cart %v)", got, want, c)
	}
}

// contents is a cart without its read decoration and times: what a refused
// request must leave unchanged.
func cartContents(t testing.TB, n *testNode, id string) string {
	t.Helper()
	c := cartGet(t, n, id)
	for _, l := range cartLines(t, c) {
		delete(l, "as_of")
		delete(l, "claim")
		delete(l, "available")
	}
	return mustJSON(c)
}

// ---- the seed scenario: anonymous web cart merged into the account cart ----

func TestCartMergePolicies(t *testing.T) {
	n := startCluster(t, 1)[0]
	type outcome struct {
		key                  string
		outcome              string
		targetQty, sourceQty int64
		qty                  int64
	}
	cases := []struct {
		policy string
		lines  map[string]int64
		report []outcome
		state  string
	}{
		{"sum", map[string]int64{"A": 1, "B": 3, "C": 3},
			[]outcome{{"A", "added", 0, 1, 1}, {"B", "summed", 1, 2, 3}}, "open"},
		{"max", map[string]int64{"A": 1, "B": 2, "C": 3},
			[]outcome{{"A", "added", 0, 1, 1}, {"B", "kept_source", 1, 2, 2}}, "open"},
		// The web cart's B was changed after the account's: it is later.
		{"latest", map[string]int64{"A": 1, "B": 2, "C": 3},
			[]outcome{{"A", "added", 0, 1, 1}, {"B", "kept_source", 1, 2, 2}}, "open"},
		{"target_wins", map[string]int64{"A": 1, "B": 1, "C": 3},
			[]outcome{{"A", "added", 0, 1, 1}, {"B", "kept_target", 1, 2, 1}}, "open"},
		{"source_wins", map[string]int64{"A": 1, "B": 2, "C": 3},
			[]outcome{{"A", "added", 0, 1, 1}, {"B", "kept_source", 1, 2, 2}}, "open"},
		{"review", map[string]int64{"A": 1, "B": 2, "C": 3},
			[]outcome{{"A", "added", 0, 1, 1}, {"B", "conflict", 1, 2, 2}}, "needs_review"},
	}
	for _, tc := range cases {
		t.Run(tc.policy, func(t *testing.T) {
			account := cartID(cartNew(t, n, "user:42"))
			cartAddSKU(t, n, account, "B", 1)
			acct := cartAddSKU(t, n, account, "C", 3)
			time.Sleep(5 * time.Millisecond) // the web cart's lines are strictly later
			web := cartID(cartNew(t, n, "anon:web-"+tc.policy))
			cartAddSKU(t, n, web, "A", 1)
			src := cartAddSKU(t, n, web, "B", 2)
			srcLines := map[string]string{}
			for _, l := range cartLines(t, src) {
				srcLines[cartLineKey(l)] = l["id"].(string)
			}
			cLine := cartLineOf(t, acct, "C")

			body := `{"source":` + mustJSON(web) + `,"policy":` + mustJSON(tc.policy) + `}`
			r := n.call(t, "POST", "/v1/carts/"+account+"/merge", body)
			m := wantStatus(t, n, r, 200)
			got := m["cart"].(map[string]any)
			cartWantQtys(t, got, tc.lines)
			if got["id"] != account || got["state"] != tc.state {
				t.Fatalf("target %v state %v, want %s %s", got["id"], got["state"], account, tc.state)
			}
			if v := num(t, got, "version"); v != num(t, acct, "version")+1 {
				t.Fatalf("target version %d after merge, want %d", v, num(t, acct, "version")+1)
			}
			if tc.state == "needs_review" && got["review_reason"] == "" {
				t.Fatal("needs_review without review_reason")
			}
			// A line only in the target is untouched.
			if c := cartLineOf(t, got, "C"); num(t, c, "line_version") != num(t, cLine, "line_version") || c["id"] != cLine["id"] {
				t.Fatalf("target-only line changed: %v -> %v", cLine, c)
			}
			// B changed (new line_version, the merge's version) unless the
			// target's line was kept as it was.
			bBefore, bAfter := cartLineOf(t, acct, "B"), cartLineOf(t, got, "B")
			wantLV := num(t, got, "version")
			if tc.report[1].outcome == "kept_target" {
				wantLV = num(t, bBefore, "line_version")
			}
			if lv := num(t, bAfter, "line_version"); lv != wantLV || bAfter["id"] != bBefore["id"] {
				t.Fatalf("B after merge: id %v line_version %d, want id %v line_version %d", bAfter["id"], lv, bBefore["id"], wantLV)
			}
			if lv := num(t, cartLineOf(t, got, "A"), "line_version"); lv != num(t, got, "version") {
				t.Fatalf("added line A has line_version %d, want %d", lv, num(t, got, "version"))
			}
			rep, ok := m["report"].([]any)
			if !ok || len(rep) != len(tc.report) {
				t.Fatalf("report %v, want %d entries", m["report"], len(tc.report))
			}
			for i, w := range tc.report {
				e := rep[i].(map[string]any)
				line := e["line"].(map[string]any)
				if cartLineKey(line) != w.key || e["outcome"] != w.outcome || num(t, e, "target_qty") != w.targetQty ||
					num(t, e, "source_qty") != w.sourceQty || num(t, line, "qty") != w.qty || e["source_line_id"] != srcLines[w.key] {
					t.Fatalf("report[%d] = %v, want %+v (source line %s)", i, e, w, srcLines[w.key])
				}
				// The report's line is the target's resulting line.
				if tl := cartLineOf(t, got, w.key); tl["id"] != line["id"] || num(t, tl, "qty") != w.qty {
					t.Fatalf("report line %v is not the target's %v", line, tl)
				}
			}
			s := cartGet(t, n, web)
			if s["state"] != "merged" || s["merged_into"] != account {
				t.Fatalf("source after merge: state %v merged_into %v", s["state"], s["merged_into"])
			}
			cartWantQtys(t, s, map[string]int64{"A": 1, "B": 2}) // its lines stay readable
			if v := num(t, s, "version"); v != num(t, src, "version")+1 {
				t.Fatalf("source version %d after merge, want %d", v, num(t, src, "version")+1)
			}
			if g := cartGet(t, n, account); num(t, g, "version") != num(t, got, "version") {
				t.Fatalf("GET after merge: version %v, merge answered %v", g["version"], got["version"])
			}

			// Merging the same source again: the same answer, nothing changes.
			before, beforeSrc := cartContents(t, n, account), cartContents(t, n, web)
			again := wantStatus(t, n, n.call(t, "POST", "/v1/carts/"+account+"/merge", body), 200)
			if mustJSON(again["report"]) != mustJSON(m["report"]) {
				t.Fatalf("second merge report %v, first %v", again["report"], m["report"])
			}
			if mustJSON(again["cart"]) != mustJSON(m["cart"]) {
				t.Fatalf("second merge cart %v, first %v", again["cart"], m["cart"])
			}
			if after := cartContents(t, n, account); after != before {
				t.Fatalf("second merge changed the target:\n%s\n%s", before, after)
			}
			if after := cartContents(t, n, web); after != beforeSrc {
				t.Fatalf("second merge changed the source:\n%s\n%s", beforeSrc, after)
			}
			// The retired source cannot be merged anywhere else, nor edited.
			other := cartID(cartNew(t, n, "user:43"))
			wantError(t, n, n.call(t, "POST", "/v1/carts/"+other+"/merge", `{"source":`+mustJSON(web)+`}`), 409, "invalid_state")
			wantError(t, n, n.call(t, "POST", "/v1/carts/"+web+"/lines", `{"sku":"Z","qty":1}`), 409, "invalid_state")

			if tc.state == "needs_review" {
				// needs_review refuses checkout; POST /review clears it.
				v := num(t, got, "version")
				wantError(t, n, n.call(t, "POST", "/v1/carts/"+account+"/checkout", fmt.Sprintf(`{"expected_version":%d}`, v)), 409, "invalid_state")
				rv := wantStatus(t, n, n.call(t, "POST", "/v1/carts/"+account+"/review", ""), 200)
				if rv["state"] != "open" || num(t, rv, "version") != v+1 || rv["review_reason"] != nil {
					t.Fatalf("after review: %v", rv)
				}
			}
		})
	}

	t.Run("review cleared by a line edit", func(t *testing.T) {
		account := cartID(cartNew(t, n, "user:44"))
		cartAddSKU(t, n, account, "B", 1)
		time.Sleep(5 * time.Millisecond)
		web := cartID(cartNew(t, n, "anon:web-edit"))
		cartAddSKU(t, n, web, "B", 2)
		m := wantStatus(t, n, n.call(t, "POST", "/v1/carts/"+account+"/merge", `{"source":`+mustJSON(web)+`}`), 200)
		c := m["cart"].(map[string]any)
		if c["state"] != "needs_review" { // review is the default policy
			t.Fatalf("default policy merge with a conflict: state %v", c["state"])
		}
		b := cartLineOf(t, c, "B")
		e := wantStatus(t, n, n.call(t, "PATCH", "/v1/carts/"+account+"/lines/"+b["id"].(string),
			fmt.Sprintf(`{"qty":3,"line_version":%d}`, num(t, b, "line_version"))), 200)
		if e["state"] != "open" || num(t, e, "version") != num(t, c, "version")+1 {
			t.Fatalf("after the line edit: %v", e)
		}
	})

	t.Run("latest keeps a later target line", func(t *testing.T) {
		web := cartID(cartNew(t, n, "anon:web-older"))
		cartAddSKU(t, n, web, "B", 2)
		account := cartID(cartNew(t, n, "user:48"))
		c := cartAddSKU(t, n, account, "B", 1)
		time.Sleep(5 * time.Millisecond)
		cartAddSKU(t, n, web, "X", 1) // the web cart moves on; its B does not
		b := cartLineOf(t, c, "B")
		time.Sleep(5 * time.Millisecond)
		c = wantStatus(t, n, n.call(t, "PATCH", "/v1/carts/"+account+"/lines/"+b["id"].(string),
			fmt.Sprintf(`{"qty":5,"line_version":%d}`, num(t, b, "line_version"))), 200)
		m := wantStatus(t, n, n.call(t, "POST", "/v1/carts/"+account+"/merge", `{"source":`+mustJSON(web)+`,"policy":"latest"}`), 200)
		cartWantQtys(t, m["cart"].(map[string]any), map[string]int64{"B": 5, "X": 1})
		if o := m["report"].([]any)[0].(map[string]any)["outcome"]; o != "kept_target" {
			t.Fatalf("B outcome %v, want kept_target", o)
		}
	})

	t.Run("identical lines collapse", func(t *testing.T) {
		account := cartID(cartNew(t, n, "user:45"))
		cartAddSKU(t, n, account, "B", 2)
		web := cartID(cartNew(t, n, "anon:web-same"))
		cartAddSKU(t, n, web, "B", 2)
		m := wantStatus(t, n, n.call(t, "POST", "/v1/carts/"+account+"/merge", `{"source":`+mustJSON(web)+`,"policy":"review"}`), 200)
		c := m["cart"].(map[string]any)
		cartWantQtys(t, c, map[string]int64{"B": 2})
		if c["state"] != "open" || m["report"].([]any)[0].(map[string]any)["outcome"] != "collapsed" {
			t.Fatalf("identical lines: %v", m)
		}
	})

	t.Run("capped at the per-buyer limit", func(t *testing.T) {
		putPool(t, n, "capped-pool", `{"on_hand": 100, "per_buyer_limit": 3}`, 201)
		account := cartID(cartNew(t, n, "user:46"))
		cartAdd(t, n, account, `{"sku":"K","pool":"capped-pool","qty":2}`)
		web := cartID(cartNew(t, n, "anon:web-cap"))
		cartAdd(t, n, web, `{"sku":"K","pool":"capped-pool","qty":2}`)
		// Adds are not capped: the cart stores intent.
		cartAdd(t, n, web, `{"sku":"L","pool":"capped-pool","qty":5}`)
		m := wantStatus(t, n, n.call(t, "POST", "/v1/carts/"+account+"/merge", `{"source":`+mustJSON(web)+`,"policy":"sum"}`), 200)
		cartWantQtys(t, m["cart"].(map[string]any), map[string]int64{"K": 3, "L": 3})
		for i, e := range m["report"].([]any) {
			if o := e.(map[string]any)["outcome"]; o != "capped" {
				t.Fatalf("report[%d] outcome %v, want capped", i, o)
			}
		}
	})

	t.Run("merge into itself", func(t *testing.T) {
		c := cartID(cartNew(t, n, "user:47"))
		wantError(t, n, n.call(t, "POST", "/v1/carts/"+c+"/merge", `{"source":`+mustJSON(c)+`}`), 400, "invalid_argument")
		wantError(t, n, n.call(t, "POST", "/v1/carts/"+c+"/merge", `{"source":"c_fffffff"}`), 404, "not_found")
	})
}

// ---- two devices editing one cart ----

func TestCartPhoneDesktop(t *testing.T) {
	n := startCluster(t, 1)[0]
	id := cartID(cartNew(t, n, "user:7"))
	cartAddSKU(t, n, id, "A", 1)
	c := cartAddSKU(t, n, id, "B", 1) // version 3
	a, b := cartLineOf(t, c, "A"), cartLineOf(t, c, "B")
	if num(t, a, "line_version") != 2 || num(t, b, "line_version") != 3 || num(t, c, "version") != 3 {
		t.Fatalf("versions: cart %v, A %v, B %v", c["version"], a["line_version"], b["line_version"])
	}
	aPath := "/v1/carts/" + id + "/lines/" + a["id"].(string)
	bPath := "/v1/carts/" + id + "/lines/" + b["id"].(string)

	// Both devices load the cart at version 3. The desktop raises A to 2.
	d := wantStatus(t, n, n.call(t, "PATCH", aPath, `{"qty":2,"line_version":2}`), 200)
	if num(t, d, "version") != 4 || num(t, cartLineOf(t, d, "A"), "line_version") != 4 || num(t, cartLineOf(t, d, "A"), "qty") != 2 {
		t.Fatalf("after the desktop's edit: %v", d)
	}
	if num(t, cartLineOf(t, d, "B"), "line_version") != 3 {
		t.Fatalf("an edit of A moved B: %v", d)
	}

	// The phone deletes A with the line_version it saw: refused, with the
	// current line, and nothing changes.
	before := cartContents(t, n, id)
	det := wantError(t, n, n.call(t, "DELETE", aPath+"?line_version=2", ""), 409, "version_conflict")
	cur, ok := det["line"].(map[string]any)
	if !ok || cur["id"] != a["id"] || num(t, cur, "qty") != 2 || num(t, cur, "line_version") != 4 {
		t.Fatalf("details.line = %v, want line %v at qty 2, line_version 4", det["line"], a["id"])
	}
	// A stale PATCH is refused the same way.
	wantError(t, n, n.call(t, "PATCH", aPath, `{"qty":5,"line_version":2}`), 409, "version_conflict")
	if after := cartContents(t, n, id); after != before {
		t.Fatalf("a refused edit changed the cart:\n%s\n%s", before, after)
	}

	// Another line edited meanwhile with its own version never conflicts,
	// although the cart moved since the phone loaded it.
	p := wantStatus(t, n, n.call(t, "PATCH", bPath, `{"qty":4,"line_version":3}`), 200)
	cartWantQtys(t, p, map[string]int64{"A": 2, "B": 4})
	if num(t, p, "version") != 5 {
		t.Fatalf("version %v after the phone's edit of B, want 5", p["version"])
	}

	// With the fresh version the phone's delete goes through.
	del := wantStatus(t, n, n.call(t, "DELETE", aPath+"?line_version=4", ""), 200)
	cartWantQtys(t, del, map[string]int64{"B": 4})
	if num(t, del, "version") != 6 {
		t.Fatalf("version %v after delete, want 6", del["version"])
	}
	// The deleted line is gone: 404, whatever version.
	wantError(t, n, n.call(t, "DELETE", aPath+"?line_version=4", ""), 404, "not_found")
	wantError(t, n, n.call(t, "PATCH", aPath, `{"qty":1,"line_version":4}`), 404, "not_found")
	// Line ids are never reused.
	e := cartAddSKU(t, n, id, "A", 1)
	if na := cartLineOf(t, e, "A"); na["id"] == a["id"] {
		t.Fatalf("line id %v reused", na["id"])
	}
}

// ---- line identity ----

func TestCartLineIdentity(t *testing.T) {
	n := startCluster(t, 1)[0]
	id := cartID(cartNew(t, n, "anon:ident"))
	cartAdd(t, n, id, `{"sku":"tee","variant":"red","qty":1}`)
	c := cartAdd(t, n, id, `{"sku":"tee","variant":"blue","qty":2}`)
	cartWantQtys(t, c, map[string]int64{"tee/red": 1, "tee/blue": 2})
	if cartLineOf(t, c, "tee/red")["pool"] != "tee:red::" || cartLineOf(t, c, "tee/blue")["pool"] != "tee:blue::" {
		t.Fatalf("derived pools: %v", c)
	}
	// The same identity again adds to its line.
	c = cartAdd(t, n, id, `{"sku":"tee","variant":"red","qty":2}`)
	cartWantQtys(t, c, map[string]int64{"tee/red": 3, "tee/blue": 2})
	// Another seller or fulfillment is another line.
	c = cartAdd(t, n, id, `{"sku":"tee","variant":"red","seller":"s2","qty":1}`)
	c = cartAdd(t, n, id, `{"sku":"tee","variant":"red","fulfillment":"wh2","qty":1}`)
	if len(cartLines(t, c)) != 4 {
		t.Fatalf("seller/fulfillment did not make new lines: %v", c)
	}

	// Attributes are part of the identity.
	id2 := cartID(cartNew(t, n, "anon:attrs"))
	cartAdd(t, n, id2, `{"sku":"hoodie","attrs":{"size":"M"},"qty":1}`)
	c = cartAdd(t, n, id2, `{"sku":"hoodie","attrs":{"size":"L"},"qty":1}`)
	cartWantQtys(t, c, map[string]int64{`hoodie{"size":"L"}`: 1, `hoodie{"size":"M"}`: 1})
	c = cartAdd(t, n, id2, `{"sku":"hoodie","attrs":{"size":"M"},"qty":4}`)
	cartWantQtys(t, c, map[string]int64{`hoodie{"size":"L"}`: 1, `hoodie{"size":"M"}`: 5})
	// No attrs is yet another line; attrs order does not matter.
	c = cartAdd(t, n, id2, `{"sku":"hoodie","qty":1}`)
	cartAdd(t, n, id2, `{"sku":"hoodie","attrs":{"size":"M","engraving":"Jo"},"qty":1}`)
	c = cartAdd(t, n, id2, `{"sku":"hoodie","attrs":{"engraving":"Jo","size":"M"},"qty":1}`)
	cartWantQtys(t, c, map[string]int64{`hoodie{"size":"L"}`: 1, `hoodie{"size":"M"}`: 5, "hoodie": 1,
		`hoodie{"engraving":"Jo","size":"M"}`: 2})

	// Through a merge, too: red and blue stay two lines, M and L too.
	account := cartID(cartNew(t, n, "user:ident"))
	cartAdd(t, n, account, `{"sku":"tee","variant":"blue","qty":1}`)
	cartAdd(t, n, account, `{"sku":"hoodie","attrs":{"size":"L"},"qty":1}`)
	web := cartID(cartNew(t, n, "anon:ident-web"))
	cartAdd(t, n, web, `{"sku":"tee","variant":"red","qty":1}`)
	cartAdd(t, n, web, `{"sku":"hoodie","attrs":{"size":"M"},"qty":1}`)
	m := wantStatus(t, n, n.call(t, "POST", "/v1/carts/"+account+"/merge", `{"source":`+mustJSON(web)+`,"policy":"review"}`), 200)
	got := m["cart"].(map[string]any)
	cartWantQtys(t, got, map[string]int64{"tee/blue": 1, "tee/red": 1, `hoodie{"size":"L"}`: 1, `hoodie{"size":"M"}`: 1})
	if got["state"] != "open" {
		t.Fatalf("a merge without shared identities needs review: %v", got)
	}
	for i, e := range m["report"].([]any) {
		if o := e.(map[string]any)["outcome"]; o != "added" {
			t.Fatalf("report[%d] outcome %v, want added", i, o)
		}
	}
}

// ---- read decoration ----

func TestCartDecoration(t *testing.T) {
	n := startCluster(t, 1)[0]
	putPool(t, n, "shoe:red:s1:wh1", `{"on_hand": 1000}`, 201)
	putPool(t, n, "scarce", `{"on_hand": 5}`, 201)
	putPool(t, n, "gone", `{"on_hand": 0}`, 201)
	id := cartID(cartNew(t, n, "user:deco"))
	cartAdd(t, n, id, `{"sku":"shoe","variant":"red","seller":"s1","fulfillment":"wh1","qty":1,"price":{"amount_minor":12900,"currency":"EUR","offer_id":"o-7"}}`)
	cartAdd(t, n, id, `{"sku":"lamp","pool":"scarce","qty":1}`)
	cartAdd(t, n, id, `{"sku":"vase","pool":"gone","qty":1}`)
	cartAdd(t, n, id, `{"sku":"ghost","qty":1}`)

	r := n.call(t, "GET", "/v1/carts/"+id, "")
	c := wantStatus(t, n, r, 200)
	type want struct {
		pool, claim string
		available   bool
	}
	for k, w := range map[string]want{
		"shoe/red": {"shoe:red:s1:wh1", "soft_claim", true},
		"lamp":     {"scarce", "confirm_at_checkout", false},
		"vase":     {"gone", "sold_out", false},
		"ghost":    {"ghost:::", "visible_interest", false},
	} {
		l := cartLineOf(t, c, k)
		if l["pool"] != w.pool || l["claim"] != w.claim {
			t.Errorf("line %s: pool %v claim %v, want %s %s", k, l["pool"], l["claim"], w.pool, w.claim)
		}
		if _, has := l["available"]; has != w.available {
			t.Errorf("line %s: available present %v, want %v: %v", k, has, w.available, l)
		}
		if asOf, _ := l["as_of"].(string); !rfc3339ms.MatchString(asOf) {
			t.Errorf("line %s: as_of %q is not RFC 3339 with ms", k, l["as_of"])
		}
		if u, _ := l["updated_at"].(string); !rfc3339ms.MatchString(u) {
			t.Errorf("line %s: updated_at %q is not RFC 3339 with ms", k, l["updated_at"])
		}
	}
	if av := num(t, cartLineOf(t, c, "shoe/red"), "available"); av != 1000 {
		t.Errorf("available %d, want 1000", av)
	}
	if p := cartLineOf(t, c, "shoe/red")["price"]; mustJSON(p) != `{"amount_minor":12900,"currency":"EUR","offer_id":"o-7"}` {
		t.Errorf("price %s", mustJSON(p))
	}
	if p := cartLineOf(t, c, "lamp")["price"]; p != nil {
		t.Errorf("a line without a price shows price %v", p)
	}
	for _, f := range []string{"created_at", "updated_at"} {
		if s, _ := c[f].(string); !rfc3339ms.MatchString(s) {
			t.Errorf("cart %s %q is not RFC 3339 with ms", f, c[f])
		}
	}
	// The claim follows the pool: a hold that takes the abundant pool low
	// turns its lines to confirm_at_checkout.
	reserve(t, n, `{"buyer":"other","lines":[{"pool":"shoe:red:s1:wh1","qty":995}]}`)
	c = cartGet(t, n, id)
	if l := cartLineOf(t, c, "shoe/red"); l["claim"] != "confirm_at_checkout" || l["available"] != nil {
		t.Errorf("after the pool ran low: %v", l)
	}
	// ?consistency=linearizable answers the same cart.
	lin := wantStatus(t, n, n.call(t, "GET", "/v1/carts/"+id+"?consistency=linearizable", ""), 200)
	if num(t, lin, "version") != num(t, c, "version") || len(cartLines(t, lin)) != 4 {
		t.Errorf("linearizable read %v, local %v", lin, c)
	}
}

// ---- checkout ----

func cartCheckout(t testing.TB, n *testNode, cart, body string, status int, headers ...string) map[string]any {
	t.Helper()
	return wantStatus(t, n, n.call(t, "POST", "/v1/carts/"+cart+"/checkout", body, headers...), status)
}

func TestCartCheckout(t *testing.T) {
	n := startCluster(t, 1)[0]
	putPool(t, n, "co-a", `{"on_hand": 100}`, 201)
	putPool(t, n, "co-b", `{"on_hand": 100}`, 201)
	putPool(t, n, "co-none", `{"on_hand": 0}`, 201)

	t.Run("snapshot, edit, confirm", func(t *testing.T) {
		id := cartID(cartNew(t, n, "user:co1"))
		cartAdd(t, n, id, `{"sku":"a","pool":"co-a","qty":2,"price":{"amount_minor":500,"currency":"EUR"}}`)
		c := cartAdd(t, n, id, `{"sku":"b","pool":"co-b","qty":1}`)
		v := num(t, c, "version")
		a0, b0 := counts(t, n, "co-a"), counts(t, n, "co-b")
		co := cartCheckout(t, n, id, fmt.Sprintf(`{"expected_version":%d,"ttl_ms":60000}`, v), 201)
		coID, _ := co["id"].(string)
		if !strings.HasPrefix(coID, "co_") || co["cart_id"] != id || num(t, co, "cart_version") != v || co["state"] != "held" {
			t.Fatalf("snapshot %v", co)
		}
		if r, _ := co["reservation_id"].(string); !strings.HasPrefix(r, "r_") {
			t.Fatalf("reservation_id %v", co["reservation_id"])
		}
		for _, f := range []string{"validated_at", "expires_at"} {
			if s, _ := co[f].(string); !rfc3339ms.MatchString(s) {
				t.Fatalf("%s %q", f, co[f])
			}
		}
		if co["confirmed_at"] != nil {
			t.Fatalf("confirmed_at %v before confirm", co["confirmed_at"])
		}
		if d := cartMsBetween(t, co["validated_at"], co["expires_at"]); d != 60000 {
			t.Fatalf("expires_at - validated_at = %d ms, want ttl_ms 60000", d)
		}
		if cs, ok := co["corrections"].([]any); !ok || len(cs) != 0 {
			t.Fatalf("corrections %v, want []", co["corrections"])
		}
		ls := co["lines"].([]any)
		if len(ls) != 2 {
			t.Fatalf("snapshot lines %v", ls)
		}
		for i, want := range []struct {
			pool string
			qty  int64
		}{{"co-a", 2}, {"co-b", 1}} {
			l := ls[i].(map[string]any)
			if l["pool"] != want.pool || num(t, l, "qty") != want.qty || l["state"] != "held" || l["line_id"] != cartLines(t, c)[i]["id"] {
				t.Fatalf("snapshot line %d: %v", i, l)
			}
		}
		if p := ls[0].(map[string]any)["price"]; mustJSON(p) != `{"amount_minor":500,"currency":"EUR"}` {
			t.Fatalf("snapshot price %s", mustJSON(p))
		}
		if a := counts(t, n, "co-a"); a[0] != a0[0]+2 {
			t.Fatalf("co-a held %d, want %d", a[0], a0[0]+2)
		}
		if b := counts(t, n, "co-b"); b[0] != b0[0]+1 {
			t.Fatalf("co-b held %d, want %d", b[0], b0[0]+1)
		}
		// The cart is checked_out at version V+1, bound to the snapshot.
		after := cartGet(t, n, id)
		if after["state"] != "checked_out" || num(t, after, "version") != v+1 || after["checkout_id"] != coID {
			t.Fatalf("cart after checkout start: %v", after)
		}
		// A blind retry (no idempotency key) is a version conflict, not a second hold.
		det := wantError(t, n, n.call(t, "POST", "/v1/carts/"+id+"/checkout", fmt.Sprintf(`{"expected_version":%d}`, v)), 409, "version_conflict")
		if dc, _ := det["cart"].(map[string]any); dc == nil || num(t, dc, "version") != v+1 {
			t.Fatalf("details.cart = %v", det["cart"])
		}
		// A second checkout at the current version while the first is held: invalid_state.
		wantError(t, n, n.call(t, "POST", "/v1/carts/"+id+"/checkout", fmt.Sprintf(`{"expected_version":%d}`, v+1)), 409, "invalid_state")

		snap := n.call(t, "GET", "/v1/checkouts/"+coID, "")
		wantStatus(t, n, snap, 200)
		// Editing the cart reopens it; the snapshot does not change.
		e := cartAdd(t, n, id, `{"sku":"a","pool":"co-a","qty":5}`)
		if e["state"] != "open" || num(t, e, "version") != v+2 {
			t.Fatalf("cart after an edit following checkout: %v", e)
		}
		snap2 := n.call(t, "GET", "/v1/checkouts/"+coID, "")
		if snap2.status != 200 || !bytes.Equal(snap.body, snap2.body) {
			t.Fatalf("snapshot changed after a cart edit:\n%s\n%s", snap.body, snap2.body)
		}

		// Confirm: the held units become sold.
		a1 := counts(t, n, "co-a")
		cf := wantStatus(t, n, n.call(t, "POST", "/v1/checkouts/"+coID+"/confirm", ""), 200)
		if cf["state"] != "confirmed" || cf["confirmed_at"] == nil || cf["id"] != coID {
			t.Fatalf("confirm: %v", cf)
		}
		if a := counts(t, n, "co-a"); a[1] != a1[1]+2 || a[0] != a1[0]-2 {
			t.Fatalf("co-a held/sold %d/%d after confirm, want %d/%d", a[0], a[1], a1[0]-2, a1[1]+2)
		}
		// Confirming twice is a success; the snapshot says confirmed.
		wantStatus(t, n, n.call(t, "POST", "/v1/checkouts/"+coID+"/confirm", ""), 200)
		if g := wantStatus(t, n, n.call(t, "GET", "/v1/checkouts/"+coID, ""), 200); g["state"] != "confirmed" {
			t.Fatalf("GET after confirm: %v", g)
		}
		if a := counts(t, n, "co-a"); a[1] != a1[1]+2 {
			t.Fatalf("a second confirm sold more: %v", a)
		}
	})

	t.Run("expired hold", func(t *testing.T) {
		id := cartID(cartNew(t, n, "user:co2"))
		c := cartAdd(t, n, id, `{"sku":"a","pool":"co-a","qty":3}`)
		a0 := counts(t, n, "co-a")
		co := cartCheckout(t, n, id, fmt.Sprintf(`{"expected_version":%d,"ttl_ms":100}`, num(t, c, "version")), 201)
		if a := counts(t, n, "co-a"); a[0] != a0[0]+3 {
			t.Fatalf("held %d, want %d", a[0], a0[0]+3)
		}
		time.Sleep(300 * time.Millisecond)
		coID := co["id"].(string)
		det := wantError(t, n, n.call(t, "POST", "/v1/checkouts/"+coID+"/confirm", ""), 409, "expired")
		if dc, _ := det["checkout"].(map[string]any); dc == nil || dc["state"] != "expired" {
			t.Fatalf("details.checkout = %v", det["checkout"])
		}
		if g := wantStatus(t, n, n.call(t, "GET", "/v1/checkouts/"+coID, ""), 200); g["state"] != "expired" || g["confirmed_at"] != nil {
			t.Fatalf("GET after an expired confirm: %v", g)
		}
		if a := counts(t, n, "co-a"); a[0] != a0[0] || a[1] != a0[1] {
			t.Fatalf("co-a held/sold %d/%d, want the units back (%d/%d)", a[0], a[1], a0[0], a0[1])
		}
		// Again: still expired.
		wantError(t, n, n.call(t, "POST", "/v1/checkouts/"+coID+"/confirm", ""), 409, "expired")
		// The hold lapsed: a new checkout of the same cart is allowed.
		cur := cartGet(t, n, id)
		cartCheckout(t, n, id, fmt.Sprintf(`{"expected_version":%d,"ttl_ms":60000}`, num(t, cur, "version")), 201)
	})

	t.Run("partial", func(t *testing.T) {
		id := cartID(cartNew(t, n, "user:co3"))
		cartAdd(t, n, id, `{"sku":"a","pool":"co-a","qty":1}`)
		cartAdd(t, n, id, `{"sku":"none","pool":"co-none","qty":1}`)
		cartAdd(t, n, id, `{"sku":"ghost","qty":1}`) // no such pool
		c := cartAdd(t, n, id, `{"sku":"b","pool":"co-b","qty":2}`)
		ids := []string{}
		for _, l := range cartLines(t, c) {
			ids = append(ids, l["id"].(string))
		}
		a0, b0 := counts(t, n, "co-a"), counts(t, n, "co-b")
		co := cartCheckout(t, n, id, fmt.Sprintf(`{"expected_version":%d,"mode":"partial"}`, num(t, c, "version")), 201)
		wantStates := []string{"held", "sold_out", "sold_out", "held"}
		ls := co["lines"].([]any)
		if len(ls) != 4 {
			t.Fatalf("snapshot lines %v", ls)
		}
		for i, l := range ls {
			lm := l.(map[string]any)
			if lm["state"] != wantStates[i] || lm["line_id"] != ids[i] {
				t.Fatalf("snapshot line %d: %v, want %s", i, lm, wantStates[i])
			}
		}
		cs, _ := co["corrections"].([]any)
		if len(cs) != 2 {
			t.Fatalf("corrections %v, want 2", co["corrections"])
		}
		for i, want := range []struct{ line, pool string }{{ids[1], "co-none"}, {ids[2], "ghost:::"}} {
			x := cs[i].(map[string]any)
			if x["line_id"] != want.line || x["pool"] != want.pool || x["state"] != "sold_out" || num(t, x, "qty") != 1 || x["message"] == "" {
				t.Fatalf("correction %d: %v, want line %s pool %s sold_out", i, x, want.line, want.pool)
			}
		}
		if a := counts(t, n, "co-a"); a[0] != a0[0]+1 {
			t.Fatalf("co-a held %d, want %d", a[0], a0[0]+1)
		}
		if b := counts(t, n, "co-b"); b[0] != b0[0]+2 {
			t.Fatalf("co-b held %d, want %d", b[0], b0[0]+2)
		}
		// The cart is not silently changed: all four lines stay.
		if got := cartGet(t, n, id); len(cartLines(t, got)) != 4 {
			t.Fatalf("cart changed by a partial checkout: %v", got)
		}
	})

	t.Run("all_or_nothing refused", func(t *testing.T) {
		id := cartID(cartNew(t, n, "user:co4"))
		cartAdd(t, n, id, `{"sku":"a","pool":"co-a","qty":1}`)
		c := cartAdd(t, n, id, `{"sku":"none","pool":"co-none","qty":1}`)
		noneLine := cartLineOf(t, c, "none")["id"]
		a0 := counts(t, n, "co-a")
		before := cartContents(t, n, id)
		det := wantError(t, n, n.call(t, "POST", "/v1/carts/"+id+"/checkout",
			fmt.Sprintf(`{"expected_version":%d,"mode":"all_or_nothing"}`, num(t, c, "version"))), 409, "sold_out")
		cs, _ := det["corrections"].([]any)
		if len(cs) != 1 {
			t.Fatalf("details.corrections = %v, want the sold-out line", det["corrections"])
		}
		if x := cs[0].(map[string]any); x["line_id"] != noneLine || x["state"] != "sold_out" || x["pool"] != "co-none" {
			t.Fatalf("correction %v", x)
		}
		if a := counts(t, n, "co-a"); a != a0 {
			t.Fatalf("co-a %v after a refused checkout, want %v", a, a0)
		}
		if after := cartContents(t, n, id); after != before {
			t.Fatalf("a refused checkout changed the cart:\n%s\n%s", before, after)
		}
		// Several refused lines come back in cart order.
		id3 := cartID(cartNew(t, n, "user:co4c"))
		cartAdd(t, n, id3, `{"sku":"n1","pool":"co-none","qty":1}`)
		cartAdd(t, n, id3, `{"sku":"a","pool":"co-a","qty":1}`)
		c3 := cartAdd(t, n, id3, `{"sku":"n2","pool":"co-none","qty":2}`)
		det = wantError(t, n, n.call(t, "POST", "/v1/carts/"+id3+"/checkout", fmt.Sprintf(`{"expected_version":%d}`, num(t, c3, "version"))), 409, "sold_out")
		cs, _ = det["corrections"].([]any)
		if len(cs) != 2 || cs[0].(map[string]any)["line_id"] != cartLineOf(t, c3, "n1")["id"] || cs[1].(map[string]any)["line_id"] != cartLineOf(t, c3, "n2")["id"] {
			t.Fatalf("details.corrections = %v, want n1 then n2", det["corrections"])
		}
		// A line on a pool that does not exist refuses the same way.
		id2 := cartID(cartNew(t, n, "user:co4b"))
		cartAdd(t, n, id2, `{"sku":"a","pool":"co-a","qty":1}`)
		c2 := cartAdd(t, n, id2, `{"sku":"ghost","qty":1}`)
		det = wantError(t, n, n.call(t, "POST", "/v1/carts/"+id2+"/checkout", fmt.Sprintf(`{"expected_version":%d}`, num(t, c2, "version"))), 409, "sold_out")
		if cs, _ := det["corrections"].([]any); len(cs) != 1 || cs[0].(map[string]any)["pool"] != "ghost:::" {
			t.Fatalf("details.corrections = %v", det["corrections"])
		}
		if a := counts(t, n, "co-a"); a != a0 {
			t.Fatalf("co-a %v after a refused checkout, want %v", a, a0)
		}
	})

	t.Run("stale version, needs_review, empty", func(t *testing.T) {
		id := cartID(cartNew(t, n, "user:co5"))
		wantError(t, n, n.call(t, "POST", "/v1/carts/"+id+"/checkout", `{"expected_version":1}`), 409, "invalid_state") // empty
		c := cartAdd(t, n, id, `{"sku":"a","pool":"co-a","qty":1}`)
		a0 := counts(t, n, "co-a")
		det := wantError(t, n, n.call(t, "POST", "/v1/carts/"+id+"/checkout", `{"expected_version":1}`), 409, "version_conflict")
		if dc, _ := det["cart"].(map[string]any); dc == nil || num(t, dc, "version") != num(t, c, "version") || dc["id"] != id {
			t.Fatalf("details.cart = %v", det["cart"])
		}
		wantError(t, n, n.call(t, "POST", "/v1/carts/"+id+"/checkout", `{"expected_version":99}`), 409, "version_conflict")

		// A review merge with a conflict: needs_review refuses checkout.
		time.Sleep(5 * time.Millisecond)
		web := cartID(cartNew(t, n, "anon:co5"))
		cartAdd(t, n, web, `{"sku":"a","pool":"co-a","qty":2}`)
		m := wantStatus(t, n, n.call(t, "POST", "/v1/carts/"+id+"/merge", `{"source":`+mustJSON(web)+`,"policy":"review"}`), 200)
		mc := m["cart"].(map[string]any)
		if mc["state"] != "needs_review" {
			t.Fatalf("merge: %v", mc)
		}
		before := cartContents(t, n, id)
		wantError(t, n, n.call(t, "POST", "/v1/carts/"+id+"/checkout", fmt.Sprintf(`{"expected_version":%d}`, num(t, mc, "version"))), 409, "invalid_state")
		if after := cartContents(t, n, id); after != before {
			t.Fatalf("a refused checkout changed the cart:\n%s\n%s", before, after)
		}
		if a := counts(t, n, "co-a"); a != a0 {
			t.Fatalf("co-a %v after refused checkouts, want %v", a, a0)
		}
		// Reviewed, it checks out.
		rv := wantStatus(t, n, n.call(t, "POST", "/v1/carts/"+id+"/review", ""), 200)
		cartCheckout(t, n, id, fmt.Sprintf(`{"expected_version":%d}`, num(t, rv, "version")), 201)
	})

	t.Run("ordered, reopened, merged into, reviewed", func(t *testing.T) {
		id := cartID(cartNew(t, n, "user:co6"))
		c := cartAdd(t, n, id, `{"sku":"a","pool":"co-a","qty":1}`)
		co := cartCheckout(t, n, id, fmt.Sprintf(`{"expected_version":%d}`, num(t, c, "version")), 201)
		// ttl_ms omitted: the pool's hold_ttl_ms (default 600000).
		if d := cartMsBetween(t, co["validated_at"], co["expires_at"]); d != 600000 {
			t.Fatalf("default hold %d ms, want 600000", d)
		}
		// Review leaves a checked_out cart checked_out (the version moves).
		rv := wantStatus(t, n, n.call(t, "POST", "/v1/carts/"+id+"/review", ""), 200)
		if rv["state"] != "checked_out" || num(t, rv, "version") != num(t, c, "version")+2 {
			t.Fatalf("review of a checked_out cart: %v", rv)
		}
		wantStatus(t, n, n.call(t, "POST", "/v1/checkouts/"+co["id"].(string)+"/confirm", ""), 200)
		// Ordered: a new checkout is refused until the cart is edited.
		cur := cartGet(t, n, id)
		if cur["state"] != "checked_out" {
			t.Fatalf("confirm changed the cart: %v", cur)
		}
		wantError(t, n, n.call(t, "POST", "/v1/carts/"+id+"/checkout", fmt.Sprintf(`{"expected_version":%d}`, num(t, cur, "version"))), 409, "invalid_state")
		// A merge into it reopens it.
		web := cartID(cartNew(t, n, "anon:co6"))
		cartAdd(t, n, web, `{"sku":"b","pool":"co-b","qty":1}`)
		m := wantStatus(t, n, n.call(t, "POST", "/v1/carts/"+id+"/merge", `{"source":`+mustJSON(web)+`}`), 200)
		mc := m["cart"].(map[string]any)
		if mc["state"] != "open" || num(t, mc, "version") != num(t, cur, "version")+1 {
			t.Fatalf("merge into an ordered cart: %v", mc)
		}
		cartCheckout(t, n, id, fmt.Sprintf(`{"expected_version":%d}`, num(t, mc, "version")), 201)
	})

	t.Run("buyer_limit and ttl over the pool's maximum", func(t *testing.T) {
		putPool(t, n, "co-limited", `{"on_hand": 100, "per_buyer_limit": 2}`, 201)
		id := cartID(cartNew(t, n, "user:co7"))
		cartAdd(t, n, id, `{"sku":"a","pool":"co-a","qty":1}`)
		c := cartAdd(t, n, id, `{"sku":"l","pool":"co-limited","qty":3}`) // adds are not capped
		if q := num(t, cartLineOf(t, c, "l"), "qty"); q != 3 {
			t.Fatalf("add capped to %d", q)
		}
		v := num(t, c, "version")
		a0, l0 := counts(t, n, "co-a"), counts(t, n, "co-limited")
		det := wantError(t, n, n.call(t, "POST", "/v1/carts/"+id+"/checkout", fmt.Sprintf(`{"expected_version":%d}`, v)), 409, "buyer_limit")
		cs, _ := det["corrections"].([]any)
		if len(cs) != 1 || cs[0].(map[string]any)["state"] != "buyer_limit" || cs[0].(map[string]any)["pool"] != "co-limited" {
			t.Fatalf("details.corrections = %v", det["corrections"])
		}
		// A ttl_ms over the pools' max_hold_ttl_ms is refused, not clamped.
		wantError(t, n, n.call(t, "POST", "/v1/carts/"+id+"/checkout", fmt.Sprintf(`{"expected_version":%d,"ttl_ms":900001,"mode":"partial"}`, v)), 400, "invalid_argument")
		if a, l := counts(t, n, "co-a"), counts(t, n, "co-limited"); a != a0 || l != l0 {
			t.Fatalf("refused checkouts held units: %v %v, want %v %v", a, l, a0, l0)
		}
		co := cartCheckout(t, n, id, fmt.Sprintf(`{"expected_version":%d,"mode":"partial"}`, v), 201)
		if cs, _ := co["corrections"].([]any); len(cs) != 1 || cs[0].(map[string]any)["state"] != "buyer_limit" {
			t.Fatalf("partial checkout corrections %v", co["corrections"])
		}
	})

	t.Run("reservation released behind the checkout", func(t *testing.T) {
		id := cartID(cartNew(t, n, "user:co8"))
		c := cartAdd(t, n, id, `{"sku":"b","pool":"co-b","qty":2}`)
		b0 := counts(t, n, "co-b")
		co := cartCheckout(t, n, id, fmt.Sprintf(`{"expected_version":%d}`, num(t, c, "version")), 201)
		rid := co["reservation_id"].(string)
		wantStatus(t, n, n.call(t, "POST", "/v1/reservations/"+rid+"/release", ""), 200)
		if b := counts(t, n, "co-b"); b != b0 {
			t.Fatalf("co-b %v after release, want %v", b, b0)
		}
		coID := co["id"].(string)
		det := wantError(t, n, n.call(t, "POST", "/v1/checkouts/"+coID+"/confirm", ""), 409, "invalid_state")
		if dc, _ := det["checkout"].(map[string]any); dc == nil || dc["state"] != "failed" {
			t.Fatalf("details.checkout = %v", det["checkout"])
		}
		if g := wantStatus(t, n, n.call(t, "GET", "/v1/checkouts/"+coID, ""), 200); g["state"] != "failed" {
			t.Fatalf("GET after a failed confirm: %v", g)
		}
		if b := counts(t, n, "co-b"); b != b0 {
			t.Fatalf("co-b %v after a failed confirm, want %v", b, b0)
		}
		// The failed checkout no longer blocks a new one.
		cur := cartGet(t, n, id)
		cartCheckout(t, n, id, fmt.Sprintf(`{"expected_version":%d}`, num(t, cur, "version")), 201)
	})

	t.Run("unknown checkout", func(t *testing.T) {
		wantError(t, n, n.call(t, "GET", "/v1/checkouts/co_ffffff", ""), 404, "not_found")
		wantError(t, n, n.call(t, "POST", "/v1/checkouts/co_ffffff/confirm", ""), 404, "not_found")
		wantError(t, n, n.call(t, "GET", "/v1/checkouts/co_01", ""), 404, "not_found")
		wantError(t, n, n.call(t, "GET", "/v1/checkouts/c_1", ""), 404, "not_found")
	})
}

// msBetween returns b - a for two RFC 3339 times, in milliseconds.
func cartMsBetween(t testing.TB, a, b any) int64 {
	t.Helper()
	ta, err1 := time.Parse(time.RFC3339Nano, fmt.Sprint(a))
	tb, err2 := time.Parse(time.RFC3339Nano, fmt.Sprint(b))
	if err1 != nil || err2 != nil {
		t.Fatalf("times %v %v: %v %v", a, b, err1, err2)
	}
	return tb.Sub(ta).Milliseconds()
}

// ---- idempotency ----

func TestCartIdempotency(t *testing.T) {
	n := startCluster(t, 1)[0]
	// Creating a cart twice with one key makes one cart.
	r1 := n.call(t, "POST", "/v1/carts", `{"owner":"anon:idem"}`, "Idempotency-Key", "create-1")
	c1 := wantStatus(t, n, r1, 201)
	r2 := n.call(t, "POST", "/v1/carts", `{"owner":"anon:idem"}`, "Idempotency-Key", "create-1")
	wantStatus(t, n, r2, 201)
	if !bytes.Equal(r1.body, r2.body) {
		t.Fatalf("create replay differs:\n%s\n%s", r1.body, r2.body)
	}
	id := cartID(c1)
	if next := cartID(cartNew(t, n, "anon:next")); next != "c_2" || id != "c_1" {
		t.Fatalf("cart ids %s then %s: a replayed create made a cart", id, next)
	}

	body := `{"sku":"A","qty":2}`
	a1 := n.call(t, "POST", "/v1/carts/"+id+"/lines", body, "Idempotency-Key", "add-1")
	wantStatus(t, n, a1, 200)
	a2 := n.call(t, "POST", "/v1/carts/"+id+"/lines", body, "Idempotency-Key", "add-1")
	wantStatus(t, n, a2, 200)
	if !bytes.Equal(a1.body, a2.body) {
		t.Fatalf("add replay differs:\n%s\n%s", a1.body, a2.body)
	}
	c := cartGet(t, n, id)
	cartWantQtys(t, c, map[string]int64{"A": 2})
	if num(t, c, "version") != 2 {
		t.Fatalf("version %v after a retried add, want 2", c["version"])
	}
	// The same key with another body, or on another cart, is a mismatch
	// and changes nothing.
	wantError(t, n, n.call(t, "POST", "/v1/carts/"+id+"/lines", `{"sku":"A","qty":3}`, "Idempotency-Key", "add-1"), 409, "idempotency_mismatch")
	wantError(t, n, n.call(t, "POST", "/v1/carts/c_2/lines", body, "Idempotency-Key", "add-1"), 409, "idempotency_mismatch")
	c = cartGet(t, n, id)
	cartWantQtys(t, c, map[string]int64{"A": 2})
	if num(t, c, "version") != 2 {
		t.Fatalf("version %v after mismatches, want 2", c["version"])
	}
	// The replay answers the first result even after the cart moved on.
	cartAddSKU(t, n, id, "B", 1)
	a3 := n.call(t, "POST", "/v1/carts/"+id+"/lines", body, "Idempotency-Key", "add-1")
	if a3.status != 200 || !bytes.Equal(a1.body, a3.body) {
		t.Fatalf("replay after a change: %d %s, want the first answer %s", a3.status, a3.body, a1.body)
	}
	cartWantQtys(t, cartGet(t, n, id), map[string]int64{"A": 2, "B": 1})

	// A 400 is not remembered: the key stays free.
	wantError(t, n, n.call(t, "POST", "/v1/carts/"+id+"/lines", `{"sku":"A","qty":0}`, "Idempotency-Key", "add-2"), 400, "invalid_argument")
	cartAdd(t, n, id, `{"sku":"C","qty":1}`, "Idempotency-Key", "add-2")

	// A refusal is remembered too: a retried stale PATCH stays refused.
	a := cartLineOf(t, cartGet(t, n, id), "A")
	path := "/v1/carts/" + id + "/lines/" + a["id"].(string)
	stale := fmt.Sprintf(`{"qty":5,"line_version":%d}`, num(t, a, "line_version")+100)
	p1 := n.call(t, "PATCH", path, stale, "Idempotency-Key", "patch-1")
	wantError(t, n, p1, 409, "version_conflict")
	// PATCH is not a POST, but the key is honoured the same way.
	p2 := n.call(t, "PATCH", path, stale, "Idempotency-Key", "patch-1")
	if p2.status != 409 || !bytes.Equal(p1.body, p2.body) {
		t.Fatalf("PATCH replay: %d %s, want %s", p2.status, p2.body, p1.body)
	}

	// Checkout start with a key: a retry returns the same snapshot, 201
	// again, and holds once.
	putPool(t, n, "idem-pool", `{"on_hand": 10}`, 201)
	id3 := cartID(cartNew(t, n, "user:idem"))
	c3 := cartAdd(t, n, id3, `{"sku":"x","pool":"idem-pool","qty":2}`)
	cb := fmt.Sprintf(`{"expected_version":%d}`, num(t, c3, "version"))
	k1 := n.call(t, "POST", "/v1/carts/"+id3+"/checkout", cb, "Idempotency-Key", "co-1")
	wantStatus(t, n, k1, 201)
	k2 := n.call(t, "POST", "/v1/carts/"+id3+"/checkout", cb, "Idempotency-Key", "co-1")
	wantStatus(t, n, k2, 201)
	if !bytes.Equal(k1.body, k2.body) {
		t.Fatalf("checkout replay differs:\n%s\n%s", k1.body, k2.body)
	}
	if p := counts(t, n, "idem-pool"); p[0] != 2 {
		t.Fatalf("held %d after a retried checkout, want 2", p[0])
	}
}

// ---- bad inputs ----

func TestCartBadInputs(t *testing.T) {
	n := startCluster(t, 1)[0]
	id := cartID(cartNew(t, n, "user:bad")) // c_1
	c := cartAddSKU(t, n, id, "A", 1)
	line := cartLineOf(t, c, "A")
	lid := line["id"].(string)
	lv := num(t, line, "line_version")
	other := cartID(cartNew(t, n, "anon:bad-src")) // c_2
	cartAddSKU(t, n, other, "B", 1)
	nextCart := 3

	attrs17 := map[string]string{}
	for i := range 17 {
		attrs17[fmt.Sprintf("k%d", i)] = "v"
	}
	long := strings.Repeat("a", 129)
	C, L := "/v1/carts/"+id, "/v1/carts/"+id+"/lines/"+lid
	type row struct {
		name, method, path, body string
		status                   int
		code                     string
	}
	rows := []row{
		{"owner missing", "POST", "/v1/carts", `{}`, 400, "invalid_argument"},
		{"owner bob", "POST", "/v1/carts", `{"owner":"bob"}`, 400, "invalid_argument"},
		{"owner anon:", "POST", "/v1/carts", `{"owner":"anon:"}`, 400, "invalid_argument"},
		{"owner user:", "POST", "/v1/carts", `{"owner":"user:"}`, 400, "invalid_argument"},
		{"owner space", "POST", "/v1/carts", `{"owner":"user:a b"}`, 400, "invalid_argument"},
		{"owner too long", "POST", "/v1/carts", `{"owner":"user:` + long + `"}`, 400, "invalid_argument"},
		{"owner number", "POST", "/v1/carts", `{"owner":42}`, 400, "invalid_argument"},
		{"create unknown field", "POST", "/v1/carts", `{"owner":"user:1","name":"x"}`, 400, "invalid_argument"},
		{"create malformed", "POST", "/v1/carts", `{"owner":`, 400, "invalid_argument"},

		{"qty 0", "POST", C + "/lines", `{"sku":"A","qty":0}`, 400, "invalid_argument"},
		{"qty -1", "POST", C + "/lines", `{"sku":"A","qty":-1}`, 400, "invalid_argument"},
		{"qty 1000001", "POST", C + "/lines", `{"sku":"A","qty":1000001}`, 400, "invalid_argument"},
		{"qty string", "POST", C + "/lines", `{"sku":"A","qty":"1"}`, 400, "invalid_argument"},
		{"qty 1.5", "POST", C + "/lines", `{"sku":"A","qty":1.5}`, 400, "invalid_argument"},
		{"qty missing", "POST", C + "/lines", `{"sku":"A"}`, 400, "invalid_argument"},
		{"qty over the line max", "POST", C + "/lines", `{"sku":"A","qty":1000000}`, 400, "invalid_argument"},
		{"unknown field", "POST", C + "/lines", `{"sku":"A","qty":1,"colour":"red"}`, 400, "invalid_argument"},
		{"unknown price field", "POST", C + "/lines", `{"sku":"A","qty":1,"price":{"amount_minor":1,"currency":"EUR","tax":1}}`, 400, "invalid_argument"},
		{"currency eur", "POST", C + "/lines", `{"sku":"A","qty":1,"price":{"amount_minor":100,"currency":"eur"}}`, 400, "invalid_argument"},
		{"currency EURO", "POST", C + "/lines", `{"sku":"A","qty":1,"price":{"amount_minor":100,"currency":"EURO"}}`, 400, "invalid_argument"},
		{"price without currency", "POST", C + "/lines", `{"sku":"A","qty":1,"price":{"amount_minor":100}}`, 400, "invalid_argument"},
		{"negative amount", "POST", C + "/lines", `{"sku":"A","qty":1,"price":{"amount_minor":-1,"currency":"EUR"}}`, 400, "invalid_argument"},
		{"17 attrs", "POST", C + "/lines", `{"sku":"A","qty":1,"attrs":` + mustJSON(attrs17) + `}`, 400, "invalid_argument"},
		{"attr key space", "POST", C + "/lines", `{"sku":"A","qty":1,"attrs":{"a b":"x"}}`, 400, "invalid_argument"},
		{"attr value too long", "POST", C + "/lines", `{"sku":"A","qty":1,"attrs":{"k":"` + long + `"}}`, 400, "invalid_argument"},
		{"sku space", "POST", C + "/lines", `{"sku":"A B","qty":1}`, 400, "invalid_argument"},
		{"sku missing", "POST", C + "/lines", `{"qty":1}`, 400, "invalid_argument"},
		{"sku too long", "POST", C + "/lines", `{"sku":"` + long + `","qty":1}`, 400, "invalid_argument"},
		{"variant space", "POST", C + "/lines", `{"sku":"A","variant":"dark red","qty":1}`, 400, "invalid_argument"},
		{"pool space", "POST", C + "/lines", `{"sku":"A","pool":"p q","qty":1}`, 400, "invalid_argument"},
		{"derived pool too long", "POST", C + "/lines", `{"sku":"` + long[:100] + `","variant":"` + long[:40] + `","qty":1}`, 400, "invalid_argument"},
		{"add malformed", "POST", C + "/lines", `{"sku":"A","qty":1`, 400, "invalid_argument"},
		{"add array", "POST", C + "/lines", `[]`, 400, "invalid_argument"},

		{"patch without line_version", "PATCH", L, `{"qty":2}`, 400, "invalid_argument"},
		{"patch without qty", "PATCH", L, fmt.Sprintf(`{"line_version":%d}`, lv), 400, "invalid_argument"},
		{"patch qty 0", "PATCH", L, fmt.Sprintf(`{"qty":0,"line_version":%d}`, lv), 400, "invalid_argument"},
		{"patch qty 1000001", "PATCH", L, fmt.Sprintf(`{"qty":1000001,"line_version":%d}`, lv), 400, "invalid_argument"},
		{"patch line_version 0", "PATCH", L, `{"qty":2,"line_version":0}`, 400, "invalid_argument"},
		{"patch line_version string", "PATCH", L, `{"qty":2,"line_version":"2"}`, 400, "invalid_argument"},
		{"patch unknown field", "PATCH", L, fmt.Sprintf(`{"qty":2,"line_version":%d,"x":1}`, lv), 400, "invalid_argument"},
		{"delete without line_version", "DELETE", L, ``, 400, "invalid_argument"},
		{"delete line_version abc", "DELETE", L + "?line_version=abc", ``, 400, "invalid_argument"},
		{"delete line_version 0", "DELETE", L + "?line_version=0", ``, 400, "invalid_argument"},
		{"delete with a body", "DELETE", L + fmt.Sprintf("?line_version=%d", lv), `{"x":1}`, 400, "invalid_argument"},

		{"merge policy bogus", "POST", C + "/merge", `{"source":"` + other + `","policy":"bogus"}`, 400, "invalid_argument"},
		{"merge without source", "POST", C + "/merge", `{"policy":"sum"}`, 400, "invalid_argument"},
		{"merge bad source", "POST", C + "/merge", `{"source":"cart-2"}`, 400, "invalid_argument"},
		{"merge unknown field", "POST", C + "/merge", `{"source":"` + other + `","force":true}`, 400, "invalid_argument"},
		{"checkout without expected_version", "POST", C + "/checkout", `{}`, 400, "invalid_argument"},
		{"checkout expected_version 0", "POST", C + "/checkout", `{"expected_version":0}`, 400, "invalid_argument"},
		{"checkout ttl_ms 0", "POST", C + "/checkout", `{"expected_version":2,"ttl_ms":0}`, 400, "invalid_argument"},
		{"checkout mode bogus", "POST", C + "/checkout", `{"expected_version":2,"mode":"some"}`, 400, "invalid_argument"},
		{"checkout unknown field", "POST", C + "/checkout", `{"expected_version":2,"x":1}`, 400, "invalid_argument"},
		{"review with a body", "POST", C + "/review", `{"x":1}`, 400, "invalid_argument"},
		{"bad idempotency key", "POST", C + "/lines", `{"sku":"A","qty":1}`, 400, "invalid_argument"},

		{"unknown cart", "GET", "/v1/carts/c_ffffff", ``, 404, "not_found"},
		{"unknown cart add", "POST", "/v1/carts/c_ffffff/lines", `{"sku":"A","qty":1}`, 404, "not_found"},
		{"unknown cart merge", "POST", "/v1/carts/c_ffffff/merge", `{"source":"` + other + `"}`, 404, "not_found"},
		{"unknown source", "POST", C + "/merge", `{"source":"c_ffffff"}`, 404, "not_found"},
		{"unknown cart checkout", "POST", "/v1/carts/c_ffffff/checkout", `{"expected_version":1}`, 404, "not_found"},
		{"unknown line patch", "PATCH", C + "/lines/l_ff", `{"qty":1,"line_version":1}`, 404, "not_found"},
		{"unknown line delete", "DELETE", C + "/lines/l_ff?line_version=1", ``, 404, "not_found"},
		{"spelling c_01", "GET", "/v1/carts/c_01", ``, 404, "not_found"},
		{"spelling c_0", "GET", "/v1/carts/c_0", ``, 404, "not_found"},
		{"spelling C_1", "GET", "/v1/carts/C_1", ``, 404, "not_found"},
		{"spelling c_1g", "GET", "/v1/carts/c_1g", ``, 404, "not_found"},
		{"spelling c_", "GET", "/v1/carts/c_", ``, 404, "not_found"},
		{"spelling cart1", "GET", "/v1/carts/cart1", ``, 404, "not_found"},
		{"spelling c_A", "GET", "/v1/carts/c_A", ``, 404, "not_found"},
		{"spelling add", "POST", "/v1/carts/c_01/lines", `{"sku":"A","qty":1}`, 404, "not_found"},
		{"spelling patch", "PATCH", "/v1/carts/c_01/lines/" + lid, fmt.Sprintf(`{"qty":2,"line_version":%d}`, lv), 404, "not_found"},

		{"PUT carts", "PUT", "/v1/carts", `{}`, 405, "method_not_allowed"},
		{"GET carts", "GET", "/v1/carts", ``, 405, "method_not_allowed"},
		{"POST cart", "POST", C, `{}`, 405, "method_not_allowed"},
		{"DELETE cart", "DELETE", C, ``, 405, "method_not_allowed"},
		{"GET lines", "GET", C + "/lines", ``, 405, "method_not_allowed"},
		{"PUT line", "PUT", L, `{}`, 405, "method_not_allowed"},
		{"POST line", "POST", L, `{}`, 405, "method_not_allowed"},
		{"GET merge", "GET", C + "/merge", ``, 405, "method_not_allowed"},
		{"GET review", "GET", C + "/review", ``, 405, "method_not_allowed"},
		{"GET checkout", "GET", C + "/checkout", ``, 405, "method_not_allowed"},
		{"POST checkouts/id", "POST", "/v1/checkouts/co_1", `{}`, 405, "method_not_allowed"},
		{"GET confirm", "GET", "/v1/checkouts/co_1/confirm", ``, 405, "method_not_allowed"},
	}
	allow := map[string]string{
		"PUT carts": "POST", "GET carts": "POST", "POST cart": "GET", "DELETE cart": "GET", "GET lines": "POST",
		"PUT line": "PATCH, DELETE", "POST line": "PATCH, DELETE", "GET merge": "POST", "GET review": "POST",
		"GET checkout": "POST", "POST checkouts/id": "GET", "GET confirm": "POST",
	}
	before, beforeOther := cartContents(t, n, id), cartContents(t, n, other)
	for _, r := range rows {
		var headers []string
		if r.name == "bad idempotency key" {
			headers = []string{"Idempotency-Key", "a b"}
		}
		resp := n.call(t, r.method, r.path, r.body, headers...)
		if resp.status != r.status || resp.errCode() != r.code {
			t.Errorf("%s: %s %s %s: got %d %q, want %d %s: %s", r.name, r.method, r.path, r.body, resp.status, resp.errCode(), r.status, r.code, resp.body)
			continue
		}
		if _, err := errorShape(resp.status, resp.body); err != nil {
			t.Errorf("%s: %v", r.name, err)
		}
		if a, ok := allow[r.name]; ok && resp.header.Get("Allow") != a {
			t.Errorf("%s: Allow %q, want %q", r.name, resp.header.Get("Allow"), a)
		}
	}
	// Nothing changed: the carts are as they were and no cart was created.
	if after := cartContents(t, n, id); after != before {
		t.Fatalf("bad inputs changed the cart:\n%s\n%s", before, after)
	}
	if after := cartContents(t, n, other); after != beforeOther {
		t.Fatalf("bad inputs changed the source cart:\n%s\n%s", beforeOther, after)
	}
	if got := cartID(cartNew(t, n, "user:after")); got != fmt.Sprintf("c_%x", nextCart) {
		t.Fatalf("next cart id %s, want c_%x: a refused create made a cart", got, nextCart)
	}
}

// ---- three nodes: forwarding and replica reads ----

func TestCartFollowers(t *testing.T) {
	nodes := startCluster(t, 3)
	leader := waitLeader(t, nodes, 10*time.Second)
	var fs []*testNode
	for _, x := range nodes {
		if x != leader {
			fs = append(fs, x)
		}
	}
	f1, f2 := fs[0], fs[1]
	viaF1 := func(r response, status int) map[string]any {
		t.Helper()
		if r.status != status {
			t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
		}
		if r.header.Get("X-Holdfast-Via") != f1.id || r.header.Get("X-Holdfast-Node") != leader.id {
			t.Fatalf("forwarded answer: Via %q Node %q, want %s %s", r.header.Get("X-Holdfast-Via"), r.header.Get("X-Holdfast-Node"), f1.id, leader.id)
		}
		return r.json(t)
	}
	c := viaF1(f1.call(t, "POST", "/v1/carts", `{"owner":"user:fol"}`), 201)
	id := cartID(c)
	c = viaF1(f1.call(t, "POST", "/v1/carts/"+id+"/lines", `{"sku":"A","qty":1}`), 200)
	a := cartLineOf(t, c, "A")
	c = viaF1(f1.call(t, "PATCH", "/v1/carts/"+id+"/lines/"+a["id"].(string), fmt.Sprintf(`{"qty":3,"line_version":%d}`, num(t, a, "line_version"))), 200)
	want := num(t, c, "version")
	if want != 3 {
		t.Fatalf("version %d after create, add, patch; want 3", want)
	}

	// The other follower answers from its own replica once it has applied
	// the cart (a miss is forwarded by design, so wait for the apply first:
	// under load the follower may lag the acknowledged write).
	commit := leader.node.Status().CommitIndex
	for deadline := time.Now().Add(5 * time.Second); f2.node.Status().AppliedIndex < commit; {
		if time.Now().After(deadline) {
			t.Fatalf("follower applied %d, leader committed %d", f2.node.Status().AppliedIndex, commit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		r := f2.call(t, "GET", "/v1/carts/"+id, "")
		if r.header.Get("X-Holdfast-Via") != "" || r.header.Get("X-Holdfast-Node") != f2.id {
			t.Fatalf("a default cart read was forwarded: Via %q Node %q", r.header.Get("X-Holdfast-Via"), r.header.Get("X-Holdfast-Node"))
		}
		if r.status == 200 {
			g := r.json(t)
			if num(t, g, "version") == want {
				cartWantQtys(t, g, map[string]int64{"A": 3})
				if as, _ := cartLineOf(t, g, "A")["as_of"].(string); !rfc3339ms.MatchString(as) {
					t.Fatalf("replica as_of %q", as)
				}
				break
			}
		} else if r.status != 404 {
			t.Fatalf("replica read: %d %s", r.status, r.body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("follower %s did not show version %d within 2 s: %d %s", f2.id, want, r.status, r.body)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// A linearizable read sees a write at once, through any node.
	for i := range 5 {
		c = viaF1(f1.call(t, "POST", "/v1/carts/"+id+"/lines", fmt.Sprintf(`{"sku":"B%d","qty":1}`, i)), 200)
		v := num(t, c, "version")
		r := f2.call(t, "GET", "/v1/carts/"+id+"?consistency=linearizable", "")
		if r.status != 200 {
			t.Fatalf("linearizable read: %d %s", r.status, r.body)
		}
		if r.header.Get("X-Holdfast-Via") != f2.id || r.header.Get("X-Holdfast-Node") != leader.id {
			t.Fatalf("linearizable read on a follower: Via %q Node %q", r.header.Get("X-Holdfast-Via"), r.header.Get("X-Holdfast-Node"))
		}
		if g := r.json(t); num(t, g, "version") != v {
			t.Fatalf("linearizable read version %v right after the write made %d", g["version"], v)
		}
	}

	// A checkout through a follower, read back through the other.
	putPool(t, leader, "fol-pool", `{"on_hand": 10}`, 201)
	id2 := cartID(viaF1(f1.call(t, "POST", "/v1/carts", `{"owner":"user:fol2"}`), 201))
	c2 := viaF1(f1.call(t, "POST", "/v1/carts/"+id2+"/lines", `{"sku":"x","pool":"fol-pool","qty":2}`), 200)
	co := viaF1(f1.call(t, "POST", "/v1/carts/"+id2+"/checkout", fmt.Sprintf(`{"expected_version":%d}`, num(t, c2, "version"))), 201)
	r := f2.call(t, "GET", "/v1/checkouts/"+co["id"].(string), "")
	if r.status != 200 {
		t.Fatalf("checkout read on a follower: %d %s", r.status, r.body)
	}
	var got map[string]any
	json.Unmarshal(r.body, &got)
	if mustJSON(co) != mustJSON(got) {
		t.Fatalf("checkout via %s %s, read via %s %s", f1.id, mustJSON(co), f2.id, mustJSON(got))
	}

	// A follower down while carts change catches up from the log when it
	// comes back, and every replica then holds the same carts.
	f2.stop(t)
	id3 := cartID(viaF1(f1.call(t, "POST", "/v1/carts", `{"owner":"user:fol3"}`), 201))
	viaF1(f1.call(t, "POST", "/v1/carts/"+id3+"/lines", `{"sku":"late","qty":2}`), 200)
	viaF1(f1.call(t, "POST", "/v1/carts/"+id+"/lines", `{"sku":"late","qty":1}`), 200)
	f2.start(t)
	ids := []string{id, id2, id3}
	want3 := map[string]string{}
	for _, x := range ids {
		want3[x] = cartContents(t, leader, x)
	}
	deadline = time.Now().Add(5 * time.Second)
	for _, x := range nodes {
		for _, cid := range ids {
			for {
				r := x.call(t, "GET", "/v1/carts/"+cid, "")
				// A replica that has not applied the cart yet forwards the
				// read (a miss is relayed): wait until it answers itself.
				if r.status == 200 && r.header.Get("X-Holdfast-Node") == x.id {
					if got := cartContents(t, x, cid); got == want3[cid] {
						break
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("cart %s on %s: %d %s, want %s", cid, x.id, r.status, r.body, want3[cid])
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
}

// ---- restart ----

// TestCartRestart: carts, checkouts and cart idempotency keys survive a
// restart from the data directory (the keyspace is wiped and rebuilt from
// the latest snapshot and the log after it), and the id counters go on.
func TestCartRestart(t *testing.T) {
	n := startCluster(t, 1)[0]
	putPool(t, n, "rs-pool", `{"on_hand": 50}`, 201)
	id := cartID(cartNew(t, n, "user:rs"))
	add := n.call(t, "POST", "/v1/carts/"+id+"/lines", `{"sku":"a","pool":"rs-pool","qty":2}`, "Idempotency-Key", "rs-add")
	wantStatus(t, n, add, 200)
	c := cartAdd(t, n, id, `{"sku":"b","variant":"red","attrs":{"size":"M"},"qty":1,"price":{"amount_minor":10,"currency":"SEK"}}`)
	if err := n.node.Snapshot(); err != nil {
		t.Fatal(err)
	}
	// After the snapshot: an edit, a merge, a checkout.
	b := cartLineOf(t, c, `b/red{"size":"M"}`)
	c = wantStatus(t, n, n.call(t, "PATCH", "/v1/carts/"+id+"/lines/"+b["id"].(string), fmt.Sprintf(`{"qty":4,"line_version":%d}`, num(t, b, "line_version"))), 200)
	web := cartID(cartNew(t, n, "anon:rs"))
	cartAdd(t, n, web, `{"sku":"c","qty":1}`)
	m := wantStatus(t, n, n.call(t, "POST", "/v1/carts/"+id+"/merge", `{"source":`+mustJSON(web)+`}`), 200)
	v := num(t, m["cart"].(map[string]any), "version")
	co := cartCheckout(t, n, id, fmt.Sprintf(`{"expected_version":%d,"ttl_ms":60000,"mode":"partial"}`, v), 201)
	coID := co["id"].(string)

	beforeCart, beforeWeb := cartContents(t, n, id), cartContents(t, n, web)
	beforeCo := n.call(t, "GET", "/v1/checkouts/"+coID, "")
	beforePool := counts(t, n, "rs-pool")

	n.stop(t)
	n.start(t)
	waitLeader(t, []*testNode{n}, 10*time.Second)
	// The first linearizable read waits for the replay.
	wantStatus(t, n, n.call(t, "GET", "/v1/carts/"+id+"?consistency=linearizable", ""), 200)

	if after := cartContents(t, n, id); after != beforeCart {
		t.Fatalf("cart changed across the restart:\n%s\n%s", beforeCart, after)
	}
	if after := cartContents(t, n, web); after != beforeWeb {
		t.Fatalf("merged source changed across the restart:\n%s\n%s", beforeWeb, after)
	}
	if after := n.call(t, "GET", "/v1/checkouts/"+coID, ""); after.status != 200 || !bytes.Equal(after.body, beforeCo.body) {
		t.Fatalf("checkout changed across the restart:\n%s\n%s", beforeCo.body, after.body)
	}
	if after := counts(t, n, "rs-pool"); after != beforePool {
		t.Fatalf("pool %v after the restart, want %v", after, beforePool)
	}
	// The idempotency key from before the snapshot still replays.
	again := n.call(t, "POST", "/v1/carts/"+id+"/lines", `{"sku":"a","pool":"rs-pool","qty":2}`, "Idempotency-Key", "rs-add")
	if again.status != 200 || !bytes.Equal(again.body, add.body) {
		t.Fatalf("replay after restart: %d %s, want %s", again.status, again.body, add.body)
	}
	// The checkout confirms; the counters go on.
	wantStatus(t, n, n.call(t, "POST", "/v1/checkouts/"+coID+"/confirm", ""), 200)
	if p := counts(t, n, "rs-pool"); p[1] != beforePool[1]+2 {
		t.Fatalf("sold %d after confirm, want %d", p[1], beforePool[1]+2)
	}
	if next := cartID(cartNew(t, n, "user:rs2")); next != "c_3" {
		t.Fatalf("next cart id after restart %s, want c_3", next)
	}
	c2 := cartAdd(t, n, id, `{"sku":"d","pool":"rs-pool","qty":1}`)
	co2 := cartCheckout(t, n, id, fmt.Sprintf(`{"expected_version":%d,"mode":"partial"}`, num(t, c2, "version")), 201)
	if co2["id"] != "co_2" {
		t.Fatalf("next checkout id after restart %v, want co_2", co2["id"])
	}
}

// ---- idempotency of DELETE ----

// TestCartDeleteIdempotencyKeyCoversQuery: a DELETE carries its only
// argument, line_version, in the query. The API honours Idempotency-Key on
// DELETE, so the same key with another line_version is another request
// and must be 409 idempotency_mismatch, not a replay of the first answer
// (the request hash must cover the query, not only method, path and body).
func TestCartDeleteIdempotencyKeyCoversQuery(t *testing.T) {
	n := startCluster(t, 1)[0]
	id := cartID(cartNew(t, n, "user:del"))
	c := cartAddSKU(t, n, id, "A", 1)
	a := cartLineOf(t, c, "A")
	path := "/v1/carts/" + id + "/lines/" + a["id"].(string)
	lv := num(t, a, "line_version")

	// A stale delete with key K is refused (and the refusal remembered).
	wantError(t, n, n.call(t, "DELETE", fmt.Sprintf("%s?line_version=%d", path, lv+7), "", "Idempotency-Key", "del-1"), 409, "version_conflict")
	// The same key on a delete with the current line_version is a
	// different request.
	r := n.call(t, "DELETE", fmt.Sprintf("%s?line_version=%d", path, lv), "", "Idempotency-Key", "del-1")
	if r.status != 409 || r.errCode() != "idempotency_mismatch" {
		t.Errorf("DELETE ?line_version=%d with the key of DELETE ?line_version=%d: got %d %s, want 409 idempotency_mismatch",
			lv, lv+7, r.status, r.body)
	}
}

// ---- concurrency ----

// TestCartConcurrency: concurrent writers over HTTP. Versions move by
// exactly one per change, a line_version admits exactly one edit, a source
// merges into exactly one target, and a cart version checks out once.
func TestCartConcurrency(t *testing.T) {
	n := startCluster(t, 1)[0]
	const writers, each = 16, 8
	parallel := func(k int, f func(i int) response) []response {
		out := make([]response, k)
		done := make(chan struct{})
		for i := range k {
			go func() {
				defer func() { done <- struct{}{} }()
				out[i] = f(i)
			}()
		}
		for range k {
			<-done
		}
		return out
	}
	// do is used from goroutines: it must not call t.Fatal there.
	call := func(method, path, body string) response {
		r, ok := tryDo(t, method, n.url(path), body)
		if !ok {
			return response{}
		}
		return r
	}

	id := cartID(cartNew(t, n, "user:conc"))
	rs := parallel(writers, func(i int) response {
		var last response
		for j := range each {
			last = call("POST", "/v1/carts/"+id+"/lines", fmt.Sprintf(`{"sku":"same","qty":1,"attrs":{"w":"%d"}}`, j%2))
		}
		return last
	})
	for i, r := range rs {
		if r.status != 200 {
			t.Fatalf("writer %d: %d %s", i, r.status, r.body)
		}
	}
	c := cartGet(t, n, id)
	if v := num(t, c, "version"); v != 1+writers*each {
		t.Fatalf("version %d after %d adds, want %d", v, writers*each, 1+writers*each)
	}
	cartWantQtys(t, c, map[string]int64{`same{"w":"0"}`: writers * each / 2, `same{"w":"1"}`: writers * each / 2})

	// One line_version, many PATCHes: exactly one wins.
	l := cartLineOf(t, c, `same{"w":"0"}`)
	path := "/v1/carts/" + id + "/lines/" + l["id"].(string)
	lv := num(t, l, "line_version")
	rs = parallel(writers, func(i int) response {
		return call("PATCH", path, fmt.Sprintf(`{"qty":%d,"line_version":%d}`, 100+i, lv))
	})
	won := -1
	for i, r := range rs {
		switch {
		case r.status == 200:
			if won >= 0 {
				t.Fatalf("PATCHes %d and %d both won with one line_version", won, i)
			}
			won = i
		case r.status != 409 || r.errCode() != "version_conflict":
			t.Fatalf("PATCH %d: %d %s", i, r.status, r.body)
		}
	}
	if won < 0 {
		t.Fatal("no PATCH won")
	}
	if q := num(t, cartLineOf(t, cartGet(t, n, id), `same{"w":"0"}`), "qty"); q != int64(100+won) {
		t.Fatalf("qty %d, want the winner's %d", q, 100+won)
	}

	// One source, many targets: it merges into exactly one.
	src := cartID(cartNew(t, n, "anon:conc"))
	cartAddSKU(t, n, src, "m", 1)
	targets := make([]string, writers)
	for i := range targets {
		targets[i] = cartID(cartNew(t, n, fmt.Sprintf("user:conc-%d", i)))
	}
	rs = parallel(writers, func(i int) response {
		return call("POST", "/v1/carts/"+targets[i]+"/merge", `{"source":`+mustJSON(src)+`}`)
	})
	winner := ""
	for i, r := range rs {
		switch {
		case r.status == 200:
			if winner != "" {
				t.Fatalf("source merged into %s and %s", winner, targets[i])
			}
			winner = targets[i]
		case r.status != 409 || r.errCode() != "invalid_state":
			t.Fatalf("merge into %s: %d %s", targets[i], r.status, r.body)
		}
	}
	if s := cartGet(t, n, src); s["merged_into"] != winner || winner == "" {
		t.Fatalf("source merged_into %v, the winning merge was into %q", s["merged_into"], winner)
	}
	for _, tg := range targets {
		want := map[string]int64{}
		if tg == winner {
			want["m"] = 1
		}
		cartWantQtys(t, cartGet(t, n, tg), want)
	}

	// One cart version, many checkout starts: one hold.
	putPool(t, n, "conc-pool", `{"on_hand": 1000}`, 201)
	co := cartID(cartNew(t, n, "user:conc-co"))
	cc := cartAdd(t, n, co, `{"sku":"x","pool":"conc-pool","qty":3}`)
	body := fmt.Sprintf(`{"expected_version":%d}`, num(t, cc, "version"))
	rs = parallel(writers, func(int) response { return call("POST", "/v1/carts/"+co+"/checkout", body) })
	created := 0
	for i, r := range rs {
		switch {
		case r.status == 201:
			created++
		case r.status != 409 || r.errCode() != "version_conflict":
			t.Fatalf("checkout %d: %d %s", i, r.status, r.body)
		}
	}
	if p := counts(t, n, "conc-pool"); created != 1 || p[0] != 3 {
		t.Fatalf("%d checkouts created, pool holds %d; want 1 and 3", created, p[0])
	}
}

// ---- limits ----

// TestCartLimits: 200 lines per cart, 100 per checkout, 1,000,000 per line.
func TestCartLimits(t *testing.T) {
	n := startCluster(t, 1)[0]
	fill := func(id string, k int, prefix string) map[string]any {
		var c map[string]any
		for i := range k {
			c = cartAdd(t, n, id, fmt.Sprintf(`{"sku":"%s%d","qty":1}`, prefix, i))
		}
		return c
	}
	big := cartID(cartNew(t, n, "user:big"))
	c := fill(big, 101, "s")
	// Over 100 lines: one reservation cannot hold them.
	wantError(t, n, n.call(t, "POST", "/v1/carts/"+big+"/checkout", fmt.Sprintf(`{"expected_version":%d,"mode":"partial"}`, num(t, c, "version"))), 409, "invalid_state")
	c = fill(big, 200, "s") // lines s0..s100 exist: adds to them, then new ones up to 200
	if len(cartLines(t, c)) != 200 {
		t.Fatalf("%d lines, want 200", len(cartLines(t, c)))
	}
	before := cartContents(t, n, big)
	wantError(t, n, n.call(t, "POST", "/v1/carts/"+big+"/lines", `{"sku":"one-more","qty":1}`), 400, "invalid_argument")
	// A merge that would pass 200 lines changes neither cart.
	src := cartID(cartNew(t, n, "anon:big"))
	cartAddSKU(t, n, src, "s0", 1) // shared: fine
	cartAddSKU(t, n, src, "extra", 1)
	beforeSrc := cartContents(t, n, src)
	wantError(t, n, n.call(t, "POST", "/v1/carts/"+big+"/merge", `{"source":`+mustJSON(src)+`,"policy":"sum"}`), 400, "invalid_argument")
	if after := cartContents(t, n, big); after != before {
		t.Fatalf("refused add or merge changed the target:\n%s\n%s", before, after)
	}
	if after := cartContents(t, n, src); after != beforeSrc {
		t.Fatalf("refused merge changed the source:\n%s\n%s", beforeSrc, after)
	}

	// Quantities: a line holds at most 1,000,000; a sum merge caps there.
	a := cartID(cartNew(t, n, "user:qty"))
	cartAddSKU(t, n, a, "q", 600000)
	wantError(t, n, n.call(t, "POST", "/v1/carts/"+a+"/lines", `{"sku":"q","qty":400001}`), 400, "invalid_argument")
	cartAddSKU(t, n, a, "q", 400000)
	b := cartID(cartNew(t, n, "anon:qty"))
	cartAddSKU(t, n, b, "q", 7)
	m := wantStatus(t, n, n.call(t, "POST", "/v1/carts/"+a+"/merge", `{"source":`+mustJSON(b)+`,"policy":"sum"}`), 200)
	cartWantQtys(t, m["cart"].(map[string]any), map[string]int64{"q": 1000000})
	if o := m["report"].([]any)[0].(map[string]any)["outcome"]; o != "capped" {
		t.Fatalf("outcome %v, want capped", o)
	}
}

// ---- ids in paths ----

// TestCartBadLineIDIs404: a path id with a spelling that cannot exist is
// "no such object" (404 not_found) everywhere else in the API (carts,
// checkouts, reservations: api/carts.go cartArg, checkoutArg;
// api/server.go reservationArg). A line id in the path must follow the
// same rule instead of answering 400 invalid_argument.
func TestCartBadLineIDIs404(t *testing.T) {
	n := startCluster(t, 1)[0]
	id := cartID(cartNew(t, n, "user:lineid"))
	c := cartAddSKU(t, n, id, "A", 1)
	lv := num(t, cartLineOf(t, c, "A"), "line_version")
	before := cartContents(t, n, id)
	for _, bad := range []string{"l_01", "l_0", "L_1", "line-1", "l_", "l_1g"} {
		p := "/v1/carts/" + id + "/lines/" + bad
		if r := n.call(t, "PATCH", p, fmt.Sprintf(`{"qty":2,"line_version":%d}`, lv)); r.status != 404 || r.errCode() != "not_found" {
			t.Errorf("PATCH %s: %d %s, want 404 not_found", p, r.status, r.body)
		}
		if r := n.call(t, "DELETE", fmt.Sprintf("%s?line_version=%d", p, lv), ""); r.status != 404 || r.errCode() != "not_found" {
			t.Errorf("DELETE %s: %d %s, want 404 not_found", p, r.status, r.body)
		}
	}
	if after := cartContents(t, n, id); after != before {
		t.Fatalf("cart changed:\n%s\n%s", before, after)
	}
}

// ---- read consistency parameter ----

// TestCartReadConsistencyParam: GET /v1/pools/{id} refuses an unknown
// ?consistency= value (400); a cart read must too. Otherwise a typo such
// as "linearisable" silently downgrades a read the client asked to be
// linearizable to a local replica read (api/carts.go getCart only looks
// for "linearizable", and api/server.go shouldForward then answers it
// locally on a follower).
func TestCartReadConsistencyParam(t *testing.T) {
	n := startCluster(t, 1)[0]
	id := cartID(cartNew(t, n, "user:cons"))
	for _, q := range []string{"", "?consistency=linearizable", "?consistency=stale"} {
		wantStatus(t, n, n.call(t, "GET", "/v1/carts/"+id+q, ""), 200)
	}
	for _, q := range []string{"?consistency=linearisable", "?consistency=LINEARIZABLE", "?consistency=strong"} {
		if r := n.call(t, "GET", "/v1/carts/"+id+q, ""); r.status != 400 || r.errCode() != "invalid_argument" {
			t.Errorf("GET cart%s: %d %s, want 400 invalid_argument (as GET /v1/pools/{id}%s)", q, r.status, r.body, q)
		}
	}
}
