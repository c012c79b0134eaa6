package api_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestDropOverHTTP: a draw pool over the real stack. Entries in the window
// wait; the leader's tick closes the draw without traffic; winners are
// active, the rest wait with exact positions; a released win goes to the
// head of the queue, never to a fresh request.
func TestDropOverHTTP(t *testing.T) {
	n := startCluster(t, 1)[0]
	opens := time.Now().UTC().Add(-time.Second)
	// The window must outlast 50 entries and two reads on a loaded CI
	// machine; the test then waits for the close anyway.
	closes := time.Now().UTC().Add(3 * time.Second)
	body := fmt.Sprintf(`{"on_hand": 10, "per_buyer_limit": 1, "mode": "draw",
		"draw": {"opens_at": %q, "closes_at": %q, "seed": "drop-1"},
		"waitlist": {"enabled": true, "offer_ttl_ms": 60000, "wait_ttl_ms": 600000}}`,
		opens.Format(time.RFC3339Nano), closes.Format(time.RFC3339Nano))
	if r := do(t, "PUT", n.url("/v1/pools/drop"), body); r.status != 201 {
		t.Fatalf("create draw pool: %d %s", r.status, r.body)
	}
	ids := map[string]string{} // buyer -> reservation id
	for i := range 50 {
		buyer := fmt.Sprintf("u-%d", i)
		r := do(t, "POST", n.url("/v1/reservations"), fmt.Sprintf(`{"buyer":%q,"lines":[{"pool":"drop","qty":1}]}`, buyer))
		if r.status != 201 {
			t.Fatalf("entry %d: %d %s", i, r.status, r.body)
		}
		v := r.json(t)
		if v["state"] != "waiting" || v["position"] != nil {
			t.Fatalf("entry before the close: %s", r.body)
		}
		ids[buyer] = v["id"].(string)
	}
	// A second entry by the same buyer returns the first.
	again := do(t, "POST", n.url("/v1/reservations"), `{"buyer":"u-7","lines":[{"pool":"drop","qty":1}]}`).json(t)
	if again["id"] != ids["u-7"] {
		t.Fatalf("second entry %v, want %v", again["id"], ids["u-7"])
	}
	p := do(t, "GET", n.url("/v1/pools/drop"), "").json(t)
	if p["claim"] != "confirm_at_checkout" || p["draw"].(map[string]any)["entries"] != 50.0 {
		t.Fatalf("open draw pool: %v", p)
	}
	// While open the seed is only committed to, never shown.
	if d := p["draw"].(map[string]any); d["seed"] != nil || d["seed_sha256"] != sha256hex("drop-1") {
		t.Fatalf("open draw shows %v", d)
	}

	// No traffic: the leader's tick closes the draw.
	time.Sleep(time.Until(closes) + 300*time.Millisecond)
	p = do(t, "GET", n.url("/v1/pools/drop"), "").json(t)
	if p["held"] != 10.0 || p["waitlist"].(map[string]any)["length"] != 40.0 || p["claim"] != "sold_out" || p["draw"].(map[string]any)["closed"] != true {
		t.Fatalf("after the close: %v", p)
	}
	if p["draw"].(map[string]any)["seed"] != "drop-1" {
		t.Fatalf("closed draw does not reveal its seed: %v", p["draw"])
	}
	var winners []string
	positions := map[float64]string{}
	for buyer, id := range ids {
		v := do(t, "GET", n.url("/v1/reservations/"+id), "").json(t)
		switch v["state"] {
		case "active":
			winners = append(winners, id)
		case "waiting":
			positions[v["position"].(float64)] = id
		default:
			t.Fatalf("%s: %v", buyer, v)
		}
	}
	if len(winners) != 10 || len(positions) != 40 {
		t.Fatalf("%d winners, %d distinct positions", len(winners), len(positions))
	}
	for pos := 1.0; pos <= 40; pos++ {
		if positions[pos] == "" {
			t.Fatalf("no reservation at position %v", pos)
		}
	}
	// A fresh request never takes a unit the queue is owed.
	if r := do(t, "POST", n.url("/v1/reservations"), `{"buyer":"latecomer","lines":[{"pool":"drop","qty":1}]}`); r.status != 409 || r.errCode() != "sold_out" {
		t.Fatalf("fresh request with a queue: %d %s", r.status, r.body)
	}
	// A released win goes to the head; everyone else moves up one.
	if r := do(t, "POST", n.url("/v1/reservations/"+winners[0]+"/release"), ""); r.status != 200 {
		t.Fatalf("release: %d %s", r.status, r.body)
	}
	head := do(t, "GET", n.url("/v1/reservations/"+positions[1]), "").json(t)
	if head["state"] != "active" {
		t.Fatalf("head after a release: %v", head)
	}
	if v := do(t, "GET", n.url("/v1/reservations/"+positions[2]), "").json(t); v["position"] != 1.0 {
		t.Fatalf("second in line did not move up: %v", v)
	}
	m := do(t, "GET", n.url("/metrics"), "")
	for _, want := range []string{"holdfast_draw_winners_total 10", "holdfast_waitlist_offers_total 11", "holdfast_queue_jumps_total 0", "holdfast_waitlist_length 39"} {
		if !strings.Contains(string(m.body), want) {
			t.Fatalf("metrics lack %q", want)
		}
	}
}

func sha256hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
