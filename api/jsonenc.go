package api

import (
	"encoding/json"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"github.com/holdfast/holdfast/allocator"
)

// Append-based JSON for the hot responses: reservations and errors. The
// output is byte for byte what json.Marshal gives for the same object
// (reservationJSON, {"error": apiError}); jsonenc_test.go checks it.

// bufPool holds response scratch buffers. A response is copied into the
// fasthttp response body, so the buffer goes back right after.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// maxPooledBuf: larger buffers (a huge error details object) are left to
// the GC rather than kept in the pool.
const maxPooledBuf = 64 << 10

// writeBody answers status with the JSON in b, then recycles *bp (b's
// storage: b grew from (*bp)[:0]).
func writeBody(ctx *fasthttp.RequestCtx, status int, bp *[]byte, b []byte) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(b) // copies
	if cap(b) <= maxPooledBuf {
		*bp = b
		bufPool.Put(bp)
	}
}

// writeReservation answers status with the reservation object.
func writeReservation(ctx *fasthttp.RequestCtx, status int, v *allocator.ReservationView) {
	bp := bufPool.Get().(*[]byte)
	writeBody(ctx, status, bp, appendReservation((*bp)[:0], v))
}

// hexDigits is encoding/json's: lower case.
const hexDigits = "0123456789abcdef"

// htmlSafe[c] is true for the ASCII bytes encoding/json writes as they are
// (json.Marshal escapes <, > and & too).
var htmlSafe = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// appendString appends s as a JSON string exactly as json.Marshal writes
// it: \b \f \n \r \t and other control bytes escaped, <, > and & as
// \u003c..., invalid UTF-8 as \ufffd, U+2028 and U+2029 escaped.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if htmlSafe[c] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '\\', '"':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// maxFastTimeMs is 10000-01-01T00:00:00Z: below it (and from 1970) the
// year has four digits and appendTime needs no time.Time.
const maxFastTimeMs = 253402300800000

// appendTime appends ms (Unix milliseconds) in the contract's layout,
// 2006-01-02T15:04:05.000Z, UTC: what formatTime returns.
func appendTime(dst []byte, ms int64) []byte {
	if ms < 0 || ms >= maxFastTimeMs {
		return time.UnixMilli(ms).UTC().AppendFormat(dst, timeLayout)
	}
	days := ms / 86_400_000
	rem := ms % 86_400_000
	// Civil date from days since 1970-01-01 (Howard Hinnant's
	// days_from_civil, inverted), for days >= 0.
	z := days + 719_468
	era := z / 146_097
	doe := z - era*146_097                                   // [0, 146096]
	yoe := (doe - doe/1460 + doe/36_524 - doe/146_096) / 365 // [0, 399]
	doy := doe - (365*yoe + yoe/4 - yoe/100)                 // [0, 365]
	mp := (5*doy + 2) / 153                                  // [0, 11], March first
	day := doy - (153*mp+2)/5 + 1                            // [1, 31]
	month := mp + 3                                          // [3, 14]
	year := yoe + era*400
	if month > 12 {
		month -= 12
		year++
	}
	hour := rem / 3_600_000
	minute := rem / 60_000 % 60
	sec := rem / 1000 % 60
	milli := rem % 1000

	var t [24]byte
	t[0] = byte('0' + year/1000)
	t[1] = byte('0' + year/100%10)
	t[2] = byte('0' + year/10%10)
	t[3] = byte('0' + year%10)
	t[4] = '-'
	t[5] = byte('0' + month/10)
	t[6] = byte('0' + month%10)
	t[7] = '-'
	t[8] = byte('0' + day/10)
	t[9] = byte('0' + day%10)
	t[10] = 'T'
	t[11] = byte('0' + hour/10)
	t[12] = byte('0' + hour%10)
	t[13] = ':'
	t[14] = byte('0' + minute/10)
	t[15] = byte('0' + minute%10)
	t[16] = ':'
	t[17] = byte('0' + sec/10)
	t[18] = byte('0' + sec%10)
	t[19] = '.'
	t[20] = byte('0' + milli/100)
	t[21] = byte('0' + milli/10%10)
	t[22] = byte('0' + milli%10)
	t[23] = 'Z'
	return append(dst, t[:]...)
}

// appendReservation appends the reservation object (reservationJSON).
func appendReservation(b []byte, v *allocator.ReservationView) []byte {
	// The id as allocator.FormatReservationID renders it ("r_" and hex),
	// without building the string.
	b = append(b, `{"id":"r_`...)
	b = strconv.AppendUint(b, v.ID, 16)
	b = append(b, `","buyer":`...)
	b = appendString(b, v.Buyer)
	b = append(b, `,"state":`...)
	b = appendString(b, v.State.String())
	b = append(b, `,"lines":`...)
	b = appendLines(b, v.Lines)
	b = append(b, `,"created_at":"`...)
	b = appendTime(b, v.CreatedAtMs)
	b = append(b, `","expires_at":"`...)
	b = appendTime(b, v.ExpiresAtMs)
	b = append(b, `","extensions":`...)
	b = strconv.AppendInt(b, v.Extensions, 10)
	b = append(b, `,"position":`...)
	if v.Position > 0 {
		b = strconv.AppendInt(b, v.Position, 10)
	} else {
		b = append(b, "null"...)
	}
	return append(b, '}')
}

// appendLines appends reservation lines ([]lineJSON).
func appendLines(b []byte, ls []allocator.LineView) []byte {
	b = append(b, '[')
	for i := range ls {
		l := &ls[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"pool":`...)
		b = appendString(b, l.Pool)
		b = append(b, `,"qty":`...)
		b = strconv.AppendInt(b, l.Qty, 10)
		b = append(b, `,"state":`...)
		b = appendString(b, l.State.String())
		b = append(b, '}')
	}
	return append(b, ']')
}

// jsonAppender is an error details value that renders itself.
type jsonAppender interface {
	appendJSON(b []byte) []byte
}

// linesDetails are a refused reservation's details: {"lines": [...]}.
type linesDetails []allocator.LineView

func (d linesDetails) appendJSON(b []byte) []byte {
	b = append(b, `{"lines":`...)
	return append(appendLines(b, d), '}')
}

// MarshalJSON keeps json.Marshal of an apiError identical.
func (d linesDetails) MarshalJSON() ([]byte, error) { return d.appendJSON(nil), nil }

// reservationDetails are {"reservation": {...}}.
type reservationDetails struct{ v *allocator.ReservationView }

func (d reservationDetails) appendJSON(b []byte) []byte {
	b = append(b, `{"reservation":`...)
	return append(appendReservation(b, d.v), '}')
}

// MarshalJSON keeps json.Marshal of an apiError identical.
func (d reservationDetails) MarshalJSON() ([]byte, error) { return d.appendJSON(nil), nil }

// encodingFailed is the answer when an error's details cannot be encoded.
const encodingFailed = `{"error":{"code":"internal","message":"encoding failed"}}`

// appendError appends {"error": e}. Details that are not a jsonAppender
// go through json.Marshal; ok is false if that fails.
func appendError(b []byte, e *apiError) (_ []byte, ok bool) {
	b = append(b, `{"error":{"code":`...)
	b = appendString(b, e.Code)
	b = append(b, `,"message":`...)
	b = appendString(b, e.Message)
	switch d := e.Details.(type) {
	case nil:
	case jsonAppender:
		b = append(b, `,"details":`...)
		b = d.appendJSON(b)
	default:
		enc, err := json.Marshal(d)
		if err != nil {
			return b, false
		}
		b = append(b, `,"details":`...)
		b = append(b, enc...)
	}
	return append(b, '}', '}'), true
}
