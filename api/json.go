package api

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/holdfast/holdfast/allocator"
)

// decodeStrict decodes one JSON object into v: unknown fields, trailing
// data, type mismatches and anything but an object (null included) are
// errors. An empty body decodes as {}. On top of encoding/json, field
// names must match exactly and a field may appear once (see jsondec.go).
func decodeStrict(body []byte, v any) *apiError {
	if e := decodeStd(body, v); e != nil {
		return e
	}
	if trimmed := bytes.Trim(body, " \t\r\n"); len(trimmed) == 0 || string(trimmed) == "{}" {
		return nil
	}
	return checkKeys(body, v)
}

// decodeStd is decodeStrict with encoding/json's rules alone.
func decodeStd(body []byte, v any) *apiError {
	trimmed := bytes.Trim(body, " \t\r\n") // JSON whitespace
	if len(trimmed) == 0 || string(trimmed) == "{}" {
		return nil // nothing to set: skip building a decoder (confirm, release)
	} else if trimmed[0] != '{' {
		return badRequest("malformed JSON: the body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("malformed JSON: " + jsonErrText(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("malformed JSON: trailing data after the object")
	}
	return nil
}

func jsonErrText(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("field %q: expected %s", te.Field, te.Type)
	}
	return err.Error()
}

const timeLayout = "2006-01-02T15:04:05.000Z"

// formatTime renders log milliseconds as the contract's RFC 3339 UTC string.
func formatTime(ms int64) string {
	var buf [24]byte
	return string(appendTime(buf[:0], ms))
}

// parseTime accepts any RFC 3339 time and returns it in milliseconds.
func parseTime(s string) (int64, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, err
	}
	return t.UnixMilli(), nil
}

// ---- requests ----

type drawJSON struct {
	OpensAt  string `json:"opens_at"`
	ClosesAt string `json:"closes_at"`
	Seed     string `json:"seed"`
}

type waitlistReq struct {
	Enabled    *bool  `json:"enabled"`
	OfferTTLMs *int64 `json:"offer_ttl_ms"`
	WaitTTLMs  *int64 `json:"wait_ttl_ms"`
}

// thresholdsJSON is a pool's demand_thresholds: when it turns warm or hot
// and when carts must confirm at checkout (see docs/design.md).
type thresholdsJSON struct {
	WarmRPS         *int64 `json:"warm_rps"`
	HotRPS          *int64 `json:"hot_rps"`
	LowStockUnits   *int64 `json:"low_stock_units"`
	LowStockPercent *int64 `json:"low_stock_percent"`
	HorizonMs       *int64 `json:"horizon_ms"`
}

type putPoolReq struct {
	DemandThresholds *thresholdsJSON `json:"demand_thresholds"`
	OnHand           *int64          `json:"on_hand"`
	PerBuyerLimit    *int64          `json:"per_buyer_limit"`
	HoldTTLMs        *int64          `json:"hold_ttl_ms"`
	MaxHoldTTLMs     *int64          `json:"max_hold_ttl_ms"`
	MaxExtensions    *int64          `json:"max_extensions"`
	Mode             *string         `json:"mode"`
	Draw             *drawJSON       `json:"draw"`
	Waitlist         *waitlistReq    `json:"waitlist"`
}

// config turns a PUT body into a full config: omitted fields take defaults.
func (r *putPoolReq) config() (allocator.PoolConfig, *apiError) {
	if r.OnHand == nil {
		return allocator.PoolConfig{}, badRequest("on_hand is required")
	}
	c := allocator.DefaultPoolConfig(*r.OnHand)
	if r.PerBuyerLimit != nil {
		c.PerBuyerLimit = *r.PerBuyerLimit
	}
	if r.HoldTTLMs != nil {
		c.HoldTTLMs = *r.HoldTTLMs
	}
	if r.MaxHoldTTLMs != nil {
		c.MaxHoldTTLMs = *r.MaxHoldTTLMs
	} else {
		c.MaxHoldTTLMs = max(c.MaxHoldTTLMs, c.HoldTTLMs)
	}
	if r.MaxExtensions != nil {
		c.MaxExtensions = *r.MaxExtensions
	}
	if r.Mode != nil {
		switch *r.Mode {
		case "fcfs":
			c.Mode = allocator.ModeFCFS
		case "draw":
			c.Mode = allocator.ModeDraw
		default:
			return c, badRequest(`mode must be "fcfs" or "draw"`)
		}
	}
	if r.Draw != nil {
		var err error
		if c.Draw.OpensAtMs, err = parseTime(r.Draw.OpensAt); err != nil {
			return c, badRequest("draw.opens_at must be an RFC 3339 time")
		}
		if c.Draw.ClosesAtMs, err = parseTime(r.Draw.ClosesAt); err != nil {
			return c, badRequest("draw.closes_at must be an RFC 3339 time")
		}
		if len(r.Draw.Seed) > allocator.MaxIDLen {
			return c, badRequest("draw.seed must be at most 128 bytes")
		}
		c.Draw.Seed = r.Draw.Seed
	}
	if w := r.Waitlist; w != nil {
		if w.Enabled != nil {
			c.Waitlist.Enabled = *w.Enabled
		}
		if w.OfferTTLMs != nil {
			c.Waitlist.OfferTTLMs = *w.OfferTTLMs
		}
		if w.WaitTTLMs != nil {
			c.Waitlist.WaitTTLMs = *w.WaitTTLMs
		}
	}
	if t := r.DemandThresholds; t != nil {
		for _, f := range []struct {
			src *int64
			dst *int64
		}{
			{t.WarmRPS, &c.Demand.WarmRPS}, {t.HotRPS, &c.Demand.HotRPS}, {t.LowStockUnits, &c.Demand.LowStockUnits},
			{t.LowStockPercent, &c.Demand.LowStockPercent}, {t.HorizonMs, &c.Demand.HorizonMs},
		} {
			if f.src != nil {
				*f.dst = *f.src
			}
		}
	}
	if err := c.Validate(); err != nil {
		return c, fromDomain(err, nil)
	}
	return c, nil
}

type adjustReq struct {
	Delta *int64 `json:"delta"`
}

type extendReq struct {
	TTLMs *int64 `json:"ttl_ms"`
}

type emptyReq struct{}

// ---- responses ----

type waitlistJSON struct {
	Enabled    bool  `json:"enabled"`
	Length     int64 `json:"length"`
	QueuedQty  int64 `json:"queued_qty"`
	OfferTTLMs int64 `json:"offer_ttl_ms"`
	WaitTTLMs  int64 `json:"wait_ttl_ms"`
}

// drawOut shows a draw. While it is open only the seed's SHA-256 is shown
// (a commitment): with the seed, anyone could compute the order from the
// public entry count. After the close the seed is shown, so anyone can
// verify the draw.
type drawOut struct {
	OpensAt    string `json:"opens_at"`
	ClosesAt   string `json:"closes_at"`
	Seed       string `json:"seed,omitempty"`
	SeedSHA256 string `json:"seed_sha256"`
	Entries    int64  `json:"entries"`
	Closed     bool   `json:"closed"`
}

type demandJSON struct {
	Heat         string  `json:"heat"`
	RequestsPerS float64 `json:"requests_per_s"`
	DenialsPerS  float64 `json:"denials_per_s"`
	WindowMs     int64   `json:"window_ms"`
}

type thresholdsOut struct {
	WarmRPS         int64 `json:"warm_rps"`
	HotRPS          int64 `json:"hot_rps"`
	LowStockUnits   int64 `json:"low_stock_units"`
	LowStockPercent int64 `json:"low_stock_percent"`
	HorizonMs       int64 `json:"horizon_ms"`
}

type poolJSON struct {
	ID               string        `json:"id"`
	OnHand           int64         `json:"on_hand"`
	Held             int64         `json:"held"`
	Sold             int64         `json:"sold"`
	Available        int64         `json:"available"`
	PerBuyerLimit    int64         `json:"per_buyer_limit"`
	HoldTTLMs        int64         `json:"hold_ttl_ms"`
	MaxHoldTTLMs     int64         `json:"max_hold_ttl_ms"`
	MaxExtensions    int64         `json:"max_extensions"`
	Mode             string        `json:"mode"`
	Draw             *drawOut      `json:"draw,omitempty"`
	Waitlist         waitlistJSON  `json:"waitlist"`
	Demand           demandJSON    `json:"demand"`
	DemandThresholds thresholdsOut `json:"demand_thresholds"`
	Claim            string        `json:"claim"`
	Stats            poolStatsJSON `json:"stats"`
	CreatedAt        string        `json:"created_at"`
	UpdatedAt        string        `json:"updated_at"`
	AsOf             string        `json:"as_of"`
	Consistency      string        `json:"consistency"`
}

// poolStatsJSON is a pool's cumulative counts (allocator.PoolStats).
type poolStatsJSON struct {
	Entries   int64 `json:"entries"`
	Winners   int64 `json:"winners"`
	Offers    int64 `json:"offers"`
	Expired   int64 `json:"expired"`
	Confirmed int64 `json:"confirmed"`
	Released  int64 `json:"released"`
}

func poolOut(p *allocator.PoolView, asOfMs int64, consistency string) *poolJSON {
	c := &p.Config
	out := &poolJSON{
		ID: p.ID, OnHand: c.OnHand, Held: p.Held, Sold: p.Sold, Available: p.Available,
		PerBuyerLimit: c.PerBuyerLimit, HoldTTLMs: c.HoldTTLMs, MaxHoldTTLMs: c.MaxHoldTTLMs,
		MaxExtensions: c.MaxExtensions, Mode: c.Mode.String(),
		Waitlist: waitlistJSON{Enabled: c.Waitlist.Enabled, Length: p.Waiting, QueuedQty: p.WaitingQty,
			OfferTTLMs: c.Waitlist.OfferTTLMs, WaitTTLMs: c.Waitlist.WaitTTLMs},
		Demand: demandJSON{Heat: p.Heat.String(), RequestsPerS: p.RequestsPerSec, DenialsPerS: p.DenialsPerSec,
			WindowMs: allocator.DemandWindowMs},
		DemandThresholds: thresholdsOut{WarmRPS: c.Demand.WarmRPS, HotRPS: c.Demand.HotRPS, LowStockUnits: c.Demand.LowStockUnits,
			LowStockPercent: c.Demand.LowStockPercent, HorizonMs: c.Demand.HorizonMs},
		Claim: p.Claim.String(), Stats: poolStatsJSON(p.Stats), CreatedAt: formatTime(p.CreatedAtMs), UpdatedAt: formatTime(p.UpdatedAtMs),
		AsOf: formatTime(asOfMs), Consistency: consistency,
	}
	if c.Mode == allocator.ModeDraw {
		sum := sha256.Sum256([]byte(c.Draw.Seed))
		out.Draw = &drawOut{OpensAt: formatTime(c.Draw.OpensAtMs), ClosesAt: formatTime(c.Draw.ClosesAtMs),
			SeedSHA256: hex.EncodeToString(sum[:]), Entries: p.DrawEntries, Closed: p.DrawClosed}
		if p.DrawClosed {
			out.Draw.Seed = c.Draw.Seed
		}
	}
	return out
}
