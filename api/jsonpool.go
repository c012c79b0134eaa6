package api

import (
	"crypto/sha256"
	"encoding/hex"
	"math"
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/holdfast/holdfast/allocator"
)

// writePool answers status with the pool object: the product page's read,
// as hot as reservations in a drop. Byte for byte json.Marshal(poolOut(...))
// (jsonpool_test.go checks it).
func writePool(ctx *fasthttp.RequestCtx, status int, p *allocator.PoolView, asOfMs int64, consistency string) {
	bp := bufPool.Get().(*[]byte)
	writeBody(ctx, status, bp, appendPool((*bp)[:0], p, asOfMs, consistency))
}

// appendPool appends the pool object (poolJSON, in its field order).
func appendPool(b []byte, p *allocator.PoolView, asOfMs int64, consistency string) []byte {
	c := &p.Config
	b = append(b, `{"id":`...)
	b = appendString(b, p.ID)
	b = appendIntField(b, `,"on_hand":`, c.OnHand)
	b = appendIntField(b, `,"held":`, p.Held)
	b = appendIntField(b, `,"sold":`, p.Sold)
	b = appendIntField(b, `,"available":`, p.Available)
	b = appendIntField(b, `,"per_buyer_limit":`, c.PerBuyerLimit)
	b = appendIntField(b, `,"hold_ttl_ms":`, c.HoldTTLMs)
	b = appendIntField(b, `,"max_hold_ttl_ms":`, c.MaxHoldTTLMs)
	b = appendIntField(b, `,"max_extensions":`, c.MaxExtensions)
	b = append(b, `,"mode":`...)
	b = appendString(b, c.Mode.String())
	if c.Mode == allocator.ModeDraw {
		b = append(b, `,"draw":{"opens_at":"`...)
		b = appendTime(b, c.Draw.OpensAtMs)
		b = append(b, `","closes_at":"`...)
		b = appendTime(b, c.Draw.ClosesAtMs)
		b = append(b, '"')
		if p.DrawClosed && c.Draw.Seed != "" {
			b = append(b, `,"seed":`...)
			b = appendString(b, c.Draw.Seed)
		}
		sum := sha256.Sum256([]byte(c.Draw.Seed))
		b = append(b, `,"seed_sha256":"`...)
		b = hex.AppendEncode(b, sum[:])
		b = appendIntField(b, `","entries":`, p.DrawEntries)
		b = append(b, `,"closed":`...)
		b = strconv.AppendBool(b, p.DrawClosed)
		b = append(b, '}')
	}
	b = append(b, `,"waitlist":{"enabled":`...)
	b = strconv.AppendBool(b, c.Waitlist.Enabled)
	b = appendIntField(b, `,"length":`, p.Waiting)
	b = appendIntField(b, `,"queued_qty":`, p.WaitingQty)
	b = appendIntField(b, `,"offer_ttl_ms":`, c.Waitlist.OfferTTLMs)
	b = appendIntField(b, `,"wait_ttl_ms":`, c.Waitlist.WaitTTLMs)
	b = append(b, `},"demand":{"heat":`...)
	b = appendString(b, p.Heat.String())
	b = append(b, `,"requests_per_s":`...)
	b = appendFloat(b, p.RequestsPerSec)
	b = append(b, `,"denials_per_s":`...)
	b = appendFloat(b, p.DenialsPerSec)
	b = appendIntField(b, `,"window_ms":`, allocator.DemandWindowMs)
	d := &c.Demand
	b = appendIntField(b, `},"demand_thresholds":{"warm_rps":`, d.WarmRPS)
	b = appendIntField(b, `,"hot_rps":`, d.HotRPS)
	b = appendIntField(b, `,"low_stock_units":`, d.LowStockUnits)
	b = appendIntField(b, `,"low_stock_percent":`, d.LowStockPercent)
	b = appendIntField(b, `,"horizon_ms":`, d.HorizonMs)
	b = append(b, `},"claim":`...)
	b = appendString(b, p.Claim.String())
	s := &p.Stats
	b = appendIntField(b, `,"stats":{"entries":`, s.Entries)
	b = appendIntField(b, `,"winners":`, s.Winners)
	b = appendIntField(b, `,"offers":`, s.Offers)
	b = appendIntField(b, `,"expired":`, s.Expired)
	b = appendIntField(b, `,"confirmed":`, s.Confirmed)
	b = appendIntField(b, `,"released":`, s.Released)
	b = append(b, `},"created_at":"`...)
	b = appendTime(b, p.CreatedAtMs)
	b = append(b, `","updated_at":"`...)
	b = appendTime(b, p.UpdatedAtMs)
	b = append(b, `","as_of":"`...)
	b = appendTime(b, asOfMs)
	b = append(b, `","consistency":`...)
	b = appendString(b, consistency)
	return append(b, '}')
}

func appendIntField(b []byte, name string, v int64) []byte {
	return strconv.AppendInt(append(b, name...), v, 10)
}

// appendFloat appends f as encoding/json writes a float64 (ES6 number
// formatting: %f in [1e-6, 1e21), otherwise %e with a short exponent).
// NaN and infinities, which json.Marshal refuses, never occur here: rates
// are finite quotients of counts.
func appendFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// 1e-07 -> 1e-7, as encoding/json does.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}
