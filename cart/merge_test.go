package cart

import (
	"reflect"
	"testing"

	"github.com/holdfast/holdfast/allocator"
)

// seedCarts builds issue 4's seed: an account cart {B×1, C×3} (at t0) and
// an anonymous web cart {A×1, B×2} (an hour later).
func seedCarts(h *harness) (account, anon string) {
	h.at(t0)
	account = h.create("user:42")
	h.add(account, item("B", ""), 1)
	h.add(account, item("C", ""), 3)
	h.at(t0 + hour)
	anon = h.create("anon:abc")
	h.add(anon, item("A", ""), 1)
	h.add(anon, item("B", ""), 2)
	return account, anon
}

func TestMergeSeedScenarios(t *testing.T) {
	cases := []struct {
		name       string
		policy     Policy
		limitB     int64 // per-buyer limit of B's pool; 0 none
		targetLate bool  // the account's B line is edited after the anon cart
		lines      string
		report     string
		state      State
	}{
		{"sum", PolicySum, 0, false, "B:x3 C:x3 A:x1", "A:added:x1 B:summed:x3", StateOpen},
		{"max", PolicyMax, 0, false, "B:x2 C:x3 A:x1", "A:added:x1 B:kept_source:x2", StateOpen},
		{"latest", PolicyLatest, 0, false, "B:x2 C:x3 A:x1", "A:added:x1 B:kept_source:x2", StateOpen},
		{"target_wins", PolicyTargetWins, 0, false, "B:x1 C:x3 A:x1", "A:added:x1 B:kept_target:x1", StateOpen},
		{"source_wins", PolicySourceWins, 0, false, "B:x2 C:x3 A:x1", "A:added:x1 B:kept_source:x2", StateOpen},
		{"review", PolicyReview, 0, false, "B:x2 C:x3 A:x1", "A:added:x1 B:conflict:x2", StateNeedsReview},
		// Variations: the target's line is the later one; a per-buyer cap.
		{"latest/target later", PolicyLatest, 0, true, "B:x1 C:x3 A:x1", "A:added:x1 B:kept_target:x1", StateOpen},
		{"review/target later", PolicyReview, 0, true, "B:x1 C:x3 A:x1", "A:added:x1 B:conflict:x1", StateNeedsReview},
		{"max/target later", PolicyMax, 0, true, "B:x2 C:x3 A:x1", "A:added:x1 B:kept_source:x2", StateOpen},
		{"sum/capped", PolicySum, 2, false, "B:x2 C:x3 A:x1", "A:added:x1 B:capped:x2", StateOpen},
		{"source_wins/capped", PolicySourceWins, 1, false, "B:x1 C:x3 A:x1", "A:added:x1 B:capped:x1", StateOpen},
		{"review/capped stays conflict", PolicyReview, 1, false, "B:x1 C:x3 A:x1", "A:added:x1 B:conflict:x1", StateNeedsReview},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			h.pools.put(pool("A", ""), 100, 0).put(pool("B", ""), 100, tc.limitB).put(pool("C", ""), 100, 0)
			account, anon := seedCarts(h)
			if tc.targetLate {
				h.at(t0 + 90*60*1000)
				b := lineBySKU(h.cart(account), "B", "")
				h.ok(Command{Kind: KindSetQty, Cart: account, LineID: b.ID, Qty: 1, LineVersion: b.LineVersion})
			}
			before := h.cart(account)
			h.at(t0 + 2*hour)
			r := h.ok(Command{Kind: KindMerge, Cart: account, Source: anon, Policy: tc.policy})
			if got := summary(r.Cart); got != tc.lines {
				t.Errorf("lines = %q, want %q", got, tc.lines)
			}
			if got := reportSummary(r.Report); got != tc.report {
				t.Errorf("report = %q, want %q", got, tc.report)
			}
			if r.Cart.State != tc.state {
				t.Errorf("state = %v, want %v", r.Cart.State, tc.state)
			}
			if tc.state == StateNeedsReview && r.Cart.ReviewReason == "" {
				t.Error("needs_review without a reason")
			}
			if r.Cart.Version != before.Version+1 {
				t.Errorf("version %d -> %d", before.Version, r.Cart.Version)
			}
			// C was only in the target: untouched, not reported.
			if c0, c1 := lineBySKU(before, "C", ""), lineBySKU(r.Cart, "C", ""); !reflect.DeepEqual(c0, c1) {
				t.Errorf("C changed: %+v -> %+v", c0, c1)
			}
			// The report's lines are the cart's lines.
			for _, o := range r.Report {
				if l := lineBySKU(r.Cart, o.Line.SKU, o.Line.Variant); !reflect.DeepEqual(*l, o.Line) {
					t.Errorf("report line %+v, cart line %+v", o.Line, *l)
				}
			}
			if got := h.cart(account); !reflect.DeepEqual(got, r.Cart) {
				t.Errorf("stored cart differs from result")
			}
			src := h.cart(anon)
			if src.State != StateMerged || src.MergedInto != account {
				t.Errorf("source state %v into %q", src.State, src.MergedInto)
			}
			// Line ids in the target stay unique.
			seen := map[string]bool{}
			for _, l := range r.Cart.Lines {
				if seen[l.ID] {
					t.Fatalf("duplicate line id %s", l.ID)
				}
				seen[l.ID] = true
			}
		})
	}
}

func TestReviewConflictClearedByEditOrReview(t *testing.T) {
	for _, clear := range []string{"edit", "review"} {
		t.Run(clear, func(t *testing.T) {
			h := newHarness(t, Config{})
			account, anon := seedCarts(h)
			h.at(t0 + 2*hour)
			r := h.ok(Command{Kind: KindMerge, Cart: account, Source: anon})
			if r.Cart.State != StateNeedsReview {
				t.Fatalf("state %v", r.Cart.State)
			}
			h.fail(Command{Kind: KindCheckout, Cart: account, ExpectedVersion: r.Cart.Version}, allocator.InvalidState)
			var c *Cart
			if clear == "edit" {
				b := lineBySKU(r.Cart, "B", "")
				c = h.ok(Command{Kind: KindSetQty, Cart: account, LineID: b.ID, Qty: 2, LineVersion: b.LineVersion}).Cart
			} else {
				c = h.ok(Command{Kind: KindReview, Cart: account}).Cart
			}
			if c.State != StateOpen || c.ReviewReason != "" {
				t.Fatalf("after %s: %v %q", clear, c.State, c.ReviewReason)
			}
		})
	}
}

func TestMergeTwiceIsNoOp(t *testing.T) {
	h := newHarness(t, Config{})
	account, anon := seedCarts(h)
	h.at(t0 + 2*hour)
	first := h.ok(Command{Kind: KindMerge, Cart: account, Source: anon, Policy: PolicySum})
	dump := h.st.dump()
	h.at(t0 + 3*hour)
	again := h.ok(Command{Kind: KindMerge, Cart: account, Source: anon, Policy: PolicySum})
	if h.st.dump() != dump {
		t.Fatal("merging again changed the store")
	}
	if !reflect.DeepEqual(first, again) {
		t.Fatalf("merging again: %+v, first %+v", again, first)
	}
	// Another policy, same source: still the first merge's answer.
	if r := h.ok(Command{Kind: KindMerge, Cart: account, Source: anon, Policy: PolicyMax}); !reflect.DeepEqual(r.Report, first.Report) {
		t.Fatal("report differs")
	}
	// The retired source can be neither edited, nor merged elsewhere, nor be a target.
	other := h.create("user:7")
	src := h.cart(anon)
	a := src.Lines[0]
	h.fail(addCmd(anon, item("Z", ""), 1), allocator.InvalidState)
	h.fail(Command{Kind: KindSetQty, Cart: anon, LineID: a.ID, Qty: 5, LineVersion: a.LineVersion}, allocator.InvalidState)
	h.fail(Command{Kind: KindDeleteLine, Cart: anon, LineID: a.ID, LineVersion: a.LineVersion}, allocator.InvalidState)
	h.fail(Command{Kind: KindReview, Cart: anon}, allocator.InvalidState)
	h.fail(Command{Kind: KindCheckout, Cart: anon, ExpectedVersion: src.Version}, allocator.InvalidState)
	h.fail(Command{Kind: KindMerge, Cart: other, Source: anon}, allocator.InvalidState)
	h.fail(Command{Kind: KindMerge, Cart: anon, Source: other}, allocator.InvalidState)
	h.fail(Command{Kind: KindMerge, Cart: account, Source: account}, allocator.InvalidArgument)
	h.fail(Command{Kind: KindMerge, Cart: account, Source: "c_999"}, allocator.NotFound)
}

func TestVariantsNeverCollapse(t *testing.T) {
	h := newHarness(t, Config{})
	c := h.create("user:1")
	h.add(c, item("shirt", "red"), 1)
	h.add(c, item("shirt", "blue"), 1)
	h.add(c, item("shirt", "red"), 2)
	other := item("shirt", "red")
	other.Seller = "s2"
	got := h.add(c, other, 1)
	if s := summary(got); s != "shirt/red:x3 shirt/blue:x1 shirt/red:x1" {
		t.Fatalf("lines %q", s)
	}
	// Attrs are part of the identity, in any order.
	eng := item("mug", "")
	eng.Attrs = []Attr{{"text", "hi"}, {"font", "serif"}}
	h.add(c, eng, 1)
	eng.Attrs = []Attr{{"font", "serif"}, {"text", "hi"}}
	h.add(c, eng, 1)
	eng.Attrs = []Attr{{"font", "serif"}, {"text", "ho"}}
	got = h.add(c, eng, 1)
	if s := summary(got); s != "shirt/red:x3 shirt/blue:x1 shirt/red:x1 mug:x2 mug:x1" {
		t.Fatalf("lines %q", s)
	}
	if l := got.Lines[3]; l.Attrs[0].Key != "font" || l.Pool != pool("mug", "") {
		t.Fatalf("attrs not canonical or pool wrong: %+v", l)
	}

	for p := PolicyReview; p < numPolicies; p++ {
		t.Run(p.String(), func(t *testing.T) {
			h := newHarness(t, Config{})
			target := h.create("user:1")
			h.add(target, item("shirt", "red"), 1)
			src := h.create("anon:1")
			h.add(src, item("shirt", "blue"), 2)
			r := h.ok(Command{Kind: KindMerge, Cart: target, Source: src, Policy: p})
			if s := summary(r.Cart); s != "shirt/red:x1 shirt/blue:x2" {
				t.Fatalf("lines %q", s)
			}
			if s := reportSummary(r.Report); s != "shirt/blue:added:x2" {
				t.Fatalf("report %q", s)
			}
			if r.Cart.State != StateOpen {
				t.Fatalf("state %v", r.Cart.State)
			}
		})
	}
}

func TestMergeLineLimit(t *testing.T) {
	h := newHarness(t, Config{})
	a := h.create("user:1")
	b := h.create("anon:1")
	for i := range MaxLines {
		h.add(a, item("a"+itoa(i), ""), 1)
	}
	h.fail(addCmd(a, item("one-more", ""), 1), allocator.InvalidArgument)
	h.add(b, item("b", ""), 1)
	dump := h.st.dump()
	h.fail(Command{Kind: KindMerge, Cart: a, Source: b}, allocator.InvalidArgument)
	if h.st.dump() != dump {
		t.Fatal("refused merge changed the store")
	}
	// Shared lines do not count twice.
	c := h.create("anon:2")
	h.add(c, item("a0", ""), 1)
	if r := h.ok(Command{Kind: KindMerge, Cart: c, Source: a, Policy: PolicySum}); len(r.Cart.Lines) != MaxLines {
		t.Fatalf("%d lines", len(r.Cart.Lines))
	}
}

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}
