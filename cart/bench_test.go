package cart

import (
	"strconv"
	"testing"
)

// benchCart makes a cart with n lines.
func benchCart(h *harness, owner string, n int) string {
	id := h.create(owner)
	for i := range n {
		h.add(id, item("sku-"+strconv.Itoa(i), "v"), 1)
	}
	return id
}

// BenchmarkAddLine adds one unit to a line of a 10-line cart.
func BenchmarkAddLine(b *testing.B) {
	h := newHarness(b, Config{})
	id := benchCart(h, "user:1", 10)
	cmds := make([]Command, 10)
	for i := range cmds {
		cmds[i] = addCmd(id, item("sku-"+strconv.Itoa(i), "v"), 1)
	}
	i := 0
	for b.Loop() {
		h.now++
		if r := h.m.Apply(h.st, h.pools, h.now, &cmds[i%len(cmds)]); r.Err != nil {
			b.Fatal(r.Err)
		}
		i++
	}
}

// BenchmarkAddLineIdem is BenchmarkAddLine with an idempotency key per
// command (one more record and index entry per add).
func BenchmarkAddLineIdem(b *testing.B) {
	h := newHarness(b, Config{})
	id := benchCart(h, "user:1", 10)
	i := 0
	for b.Loop() {
		h.now++
		c := addCmd(id, item("sku-"+strconv.Itoa(i%10), "v"), 1)
		c.IdemKey = "k-" + strconv.Itoa(i)
		if r := h.m.Apply(h.st, h.pools, h.now, &c); r.Err != nil {
			b.Fatal(r.Err)
		}
		i++
	}
}

// BenchmarkGet reads a 20-line cart.
func BenchmarkGet(b *testing.B) {
	h := newHarness(b, Config{})
	id := benchCart(h, "user:1", 20)
	for b.Loop() {
		if _, e := Get(h.st, id); e != nil {
			b.Fatal(e)
		}
	}
}

// BenchmarkMerge merges a fresh 5-line anonymous cart (3 lines shared)
// into a 10-line account cart under sum; building the source is off-timer.
func BenchmarkMerge(b *testing.B) {
	h := newHarness(b, Config{})
	h.pools.put(pool("sku-1", "v"), 100, 5)
	target := benchCart(h, "user:1", 10)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		src := h.create("anon:1")
		for j := 7; j < 12; j++ {
			h.add(src, item("sku-"+strconv.Itoa(j), "v"), 1)
		}
		c := Command{Kind: KindMerge, Cart: target, Source: src, Policy: PolicySum}
		h.now++
		b.StartTimer()
		if r := h.m.Apply(h.st, h.pools, h.now, &c); r.Err != nil {
			b.Fatal(r.Err)
		}
		b.StopTimer()
		// Keep the target at 10 lines.
		cart := h.cart(target)
		for len(cart.Lines) > 10 {
			l := cart.Lines[len(cart.Lines)-1]
			cart = h.ok(Command{Kind: KindDeleteLine, Cart: target, LineID: l.ID, LineVersion: l.LineVersion}).Cart
		}
		b.StartTimer()
	}
}
