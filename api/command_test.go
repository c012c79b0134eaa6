package api

import (
	"math"
	"strings"
	"testing"

	"github.com/holdfast/holdfast/allocator"
)

// commandBuf leaves room for the whole encoding: AppendEncode allocates
// nothing more.
func TestCommandBufFits(t *testing.T) {
	id := strings.Repeat("x", allocator.MaxIDLen)
	maxLines := make([]allocator.LineRequest, allocator.MaxLines)
	for i := range maxLines {
		maxLines[i] = allocator.LineRequest{Pool: id, Qty: allocator.MaxQty}
	}
	for _, c := range []allocator.Command{
		{Kind: allocator.KindReserve, Buyer: "u-1", Lines: []allocator.LineRequest{{Pool: "bench-pool-1", Qty: 1}}},
		{Kind: allocator.KindReserve, IdemKey: "res-12345", Buyer: "buyer-12345", Lines: []allocator.LineRequest{{Pool: "p", Qty: 1}}, TTLMs: 120_000, Partial: true},
		{Kind: allocator.KindReserve, IdemKey: id, Buyer: id, Lines: maxLines, TTLMs: math.MaxInt64, Wait: true},
		{Kind: allocator.KindConfirm, IdemKey: id, Reservation: math.MaxUint64},
		{Kind: allocator.KindExtend, Reservation: math.MaxUint64, TTLMs: math.MinInt64},
		{Kind: allocator.KindAdjustPool, IdemKey: id, Pool: id, Delta: math.MinInt64},
		{Kind: allocator.KindPutPool, IdemKey: id, Pool: id, Config: allocator.PoolConfig{
			OnHand: math.MinInt64, PerBuyerLimit: math.MinInt64, HoldTTLMs: math.MinInt64, MaxHoldTTLMs: math.MinInt64,
			MaxExtensions: math.MinInt64, Mode: allocator.ModeDraw,
			Draw:     allocator.DrawConfig{OpensAtMs: math.MinInt64, ClosesAtMs: math.MinInt64, Seed: id},
			Waitlist: allocator.WaitlistConfig{Enabled: true, OfferTTLMs: math.MinInt64, WaitTTLMs: math.MinInt64},
			Demand: allocator.DemandConfig{WarmRPS: math.MinInt64, HotRPS: math.MinInt64, LowStockUnits: math.MinInt64,
				LowStockPercent: math.MinInt64, HorizonMs: math.MinInt64},
		}},
	} {
		buf := commandBuf(&c)
		if enc := c.AppendEncode(buf); cap(enc) != cap(buf) {
			t.Errorf("%+v: encoding is %d bytes, commandBuf gave room for %d", c.Kind, len(enc), cap(buf))
		}
	}
}
