package api

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/holdfast/holdfast/allocator"
)

func randFloat(rng *rand.Rand) float64 {
	switch rng.IntN(6) {
	case 0:
		return 0
	case 1:
		return float64(rng.Int64N(1_000_000)) / 10 // a rate: tenths
	case 2:
		return math.Float64frombits(rng.Uint64()&^(0x7ff<<52) | uint64(rng.IntN(0x7fe)+1)<<52) // any finite
	case 3:
		return rng.Float64() * 1e-7
	case 4:
		return 1e21 * (1 + rng.Float64())
	}
	return rng.Float64() * 1000
}

func randPool(rng *rand.Rand) *allocator.PoolView {
	i64 := func() int64 {
		if rng.IntN(5) == 0 {
			return rng.Int64() - math.MaxInt64/2
		}
		return rng.Int64N(1_000_000)
	}
	p := &allocator.PoolView{
		ID: randString(rng), Held: i64(), Sold: i64(), Available: i64(),
		Claim: allocator.Claim(rng.IntN(4)), Heat: allocator.Heat(rng.IntN(4)),
		RequestsPerSec: randFloat(rng), DenialsPerSec: randFloat(rng),
		Waiting: i64(), WaitingQty: i64(), DrawEntries: i64(), DrawClosed: rng.IntN(2) == 0,
		Stats:       allocator.PoolStats{Entries: i64(), Winners: i64(), Offers: i64(), Expired: i64(), Confirmed: i64(), Released: i64()},
		CreatedAtMs: randMs(rng), UpdatedAtMs: randMs(rng),
	}
	c := &p.Config
	c.OnHand, c.PerBuyerLimit, c.HoldTTLMs, c.MaxHoldTTLMs, c.MaxExtensions = i64(), i64(), i64(), i64(), i64()
	c.Mode = allocator.Mode(rng.IntN(3))
	c.Draw = allocator.DrawConfig{OpensAtMs: randMs(rng), ClosesAtMs: randMs(rng)}
	if rng.IntN(4) > 0 {
		c.Draw.Seed = randString(rng)
	}
	c.Waitlist = allocator.WaitlistConfig{Enabled: rng.IntN(2) == 0, OfferTTLMs: i64(), WaitTTLMs: i64()}
	c.Demand = allocator.DemandConfig{WarmRPS: i64(), HotRPS: i64(), LowStockUnits: i64(), LowStockPercent: i64(), HorizonMs: i64()}
	return p
}

func TestAppendPoolMatchesMarshal(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	buf := make([]byte, 0, 1024)
	for i := range 30_000 {
		p := randPool(rng)
		asOf := randMs(rng)
		consistency := [...]string{"stale", "linearizable", randString(rng)}[rng.IntN(3)]
		want, err := json.Marshal(poolOut(p, asOf, consistency))
		if err != nil {
			t.Fatal(err)
		}
		buf = appendPool(buf[:0], p, asOf, consistency)
		if !bytes.Equal(buf, want) {
			t.Fatalf("pool %d (%+v):\n got %s\nwant %s", i, p, buf, want)
		}
	}
}

func BenchmarkAppendPool(b *testing.B) {
	p := randPool(rand.New(rand.NewPCG(5, 6)))
	p.ID, p.Config.Mode = "sneaker-42:black:9:seller-1:fc-1", allocator.ModeFCFS
	buf := make([]byte, 0, 1024)
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf = appendPool(buf[:0], p, 1_800_000_000_000, "stale")
		}
	})
	b.Run("marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf, _ = json.Marshal(poolOut(p, 1_800_000_000_000, "stale"))
		}
	})
}
