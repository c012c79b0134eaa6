package api

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/holdfast/holdfast/allocator"
)

// The reference rendering: the structs json.Marshal rendered the
// reservation from before appendReservation. The append encoders must
// produce the same bytes.

type lineJSON struct {
	Pool  string `json:"pool"`
	Qty   int64  `json:"qty"`
	State string `json:"state"`
}

type reservationJSON struct {
	ID         string     `json:"id"`
	Buyer      string     `json:"buyer"`
	State      string     `json:"state"`
	Lines      []lineJSON `json:"lines"`
	CreatedAt  string     `json:"created_at"`
	ExpiresAt  string     `json:"expires_at"`
	Extensions int64      `json:"extensions"`
	Position   *int64     `json:"position"`
}

func linesOut(ls []allocator.LineView) []lineJSON {
	out := make([]lineJSON, len(ls))
	for i, l := range ls {
		out[i] = lineJSON{Pool: l.Pool, Qty: l.Qty, State: l.State.String()}
	}
	return out
}

func refFormatTime(ms int64) string { return time.UnixMilli(ms).UTC().Format(timeLayout) }

func reservationOut(v *allocator.ReservationView) *reservationJSON {
	out := &reservationJSON{
		ID: allocator.FormatReservationID(v.ID), Buyer: v.Buyer, State: v.State.String(),
		Lines: linesOut(v.Lines), CreatedAt: refFormatTime(v.CreatedAtMs), ExpiresAt: refFormatTime(v.ExpiresAtMs),
		Extensions: v.Extensions,
	}
	if v.Position > 0 {
		p := v.Position
		out.Position = &p
	}
	return out
}

// refError is how writeError rendered an error before appendError, with
// the details maps resultError built then.
func refError(t *testing.T, e *apiError) []byte {
	t.Helper()
	ref := *e
	switch d := e.Details.(type) {
	case linesDetails:
		ref.Details = map[string]any{"lines": linesOut(d)}
	case reservationDetails:
		ref.Details = map[string]any{"reservation": reservationOut(d.v)}
	}
	b, err := json.Marshal(struct {
		Error *apiError `json:"error"`
	}{&ref})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Awkward strings: every ASCII byte, HTML characters, escapes, invalid
// UTF-8, U+2028/2029, multibyte runes.
var awkward = []string{
	"", "u-1", "sneaker-42", `a"b`, `a\b`, "<script>&amp;</script>", "\x00\x01\x1f\x7f",
	"\b\f\n\r\t", "bjørn", "日本", "\u2028\u2029", "a\xffb", "\xc3", "\xed\xa0\x80", "😀", "\ufffd",
	"a/b:c@d.e_f-g",
}

func randString(rng *rand.Rand) string {
	if rng.IntN(3) == 0 {
		return awkward[rng.IntN(len(awkward))]
	}
	n := rng.IntN(20)
	var b []byte
	for range n {
		switch rng.IntN(6) {
		case 0:
			b = append(b, byte(rng.IntN(256))) // any byte, invalid UTF-8 included
		case 1:
			b = utf8.AppendRune(b, rune(rng.IntN(0x110000)))
		case 2:
			b = append(b, byte(rng.IntN(0x20)))
		default:
			b = append(b, byte(0x20+rng.IntN(0x5f)))
		}
	}
	return string(b)
}

func randMs(rng *rand.Rand) int64 {
	switch rng.IntN(8) {
	case 0:
		return rng.Int64() - math.MaxInt64/2 // anywhere, mostly out of the fast range
	case 1:
		return -rng.Int64N(1 << 45) // before 1970
	case 2:
		return maxFastTimeMs - 1 - rng.Int64N(1000) // just below year 10000
	case 3:
		return maxFastTimeMs + rng.Int64N(1000)
	case 4:
		return rng.Int64N(1000) // around the epoch
	}
	return rng.Int64N(maxFastTimeMs)
}

func randReservation(rng *rand.Rand) *allocator.ReservationView {
	v := &allocator.ReservationView{
		ID:          rng.Uint64(),
		Buyer:       randString(rng),
		State:       allocator.ReservationState(rng.IntN(6)), // 5: "unknown"
		CreatedAtMs: randMs(rng),
		ExpiresAtMs: randMs(rng),
		Extensions:  rng.Int64N(5),
		Position:    rng.Int64N(3) - 1,
	}
	if rng.IntN(4) == 0 {
		v.ID = uint64(rng.IntN(300))
		v.Extensions = rng.Int64() - math.MaxInt64/2
		v.Position = rng.Int64()
	}
	n := rng.IntN(4)
	if rng.IntN(10) == 0 {
		n = rng.IntN(101)
	}
	v.Lines = make([]allocator.LineView, n)
	for i := range v.Lines {
		v.Lines[i] = allocator.LineView{Pool: randString(rng), Qty: rng.Int64N(1_000_001), State: allocator.LineState(rng.IntN(9))}
		if rng.IntN(10) == 0 {
			v.Lines[i].Qty = rng.Int64() - math.MaxInt64/2
		}
	}
	return v
}

func TestAppendReservationMatchesMarshal(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 0, 512)
	for i := range 50_000 {
		v := randReservation(rng)
		want, err := json.Marshal(reservationOut(v))
		if err != nil {
			t.Fatal(err)
		}
		buf = appendReservation(buf[:0], v)
		if !bytes.Equal(buf, want) {
			t.Fatalf("reservation %d (%+v):\n got %s\nwant %s", i, v, buf, want)
		}
	}
}

func TestAppendStringMatchesMarshal(t *testing.T) {
	check := func(s string) {
		want, _ := json.Marshal(s)
		if got := appendString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("%q:\n got %s\nwant %s", s, got, want)
		}
	}
	for c := range 256 {
		check(string([]byte{byte(c)}))
		check("a" + string([]byte{byte(c)}) + "b")
	}
	for _, s := range awkward {
		check(s)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 100_000 {
		check(randString(rng))
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range awkward {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("%q:\n got %s\nwant %s", s, got, want)
		}
	})
}

func TestAppendTimeMatchesFormat(t *testing.T) {
	check := func(ms int64) {
		if got, want := string(appendTime(nil, ms)), refFormatTime(ms); got != want {
			t.Fatalf("%d: got %s, want %s", ms, got, want)
		}
		if got, want := formatTime(ms), refFormatTime(ms); got != want {
			t.Fatalf("formatTime(%d) = %s, want %s", ms, got, want)
		}
	}
	for _, ms := range []int64{0, 1, 999, 1000, 86_399_999, 86_400_000, -1, -86_400_000, maxFastTimeMs - 1, maxFastTimeMs,
		951_782_400_000 /* 2000-02-29 */, 4_107_542_400_000 /* 2100-03-01 */, math.MaxInt64, math.MinInt64,
		time.Date(2026, 11, 26, 10, 0, 0, 123e6, time.UTC).UnixMilli()} {
		check(ms)
	}
	// Every day boundary from 1970 to 2400, and random instants.
	for d := int64(0); d < 157_000; d++ {
		check(d*86_400_000 - 1)
		check(d * 86_400_000)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 200_000 {
		check(randMs(rng))
	}
}

func TestAppendErrorMatchesMarshal(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	var errs []*apiError
	for _, msg := range awkward {
		errs = append(errs,
			badRequest(msg), unavailable(msg), notFound(msg),
			&apiError{Status: 405, Code: codeMethodNotAllowed, Message: "method not allowed; use " + msg},
		)
	}
	errs = append(errs,
		badRequest(`mode must be "all_or_nothing" or "partial"`),
		&apiError{Status: 409, Code: "sold_out", Message: "m", Details: map[string]any{"line": map[string]string{"b": "<", "a": "&"}}},
		&apiError{Status: 409, Code: "version_conflict", Message: "m", Details: map[string]any{"cart": nil}},
	)
	for range 2000 {
		v := randReservation(rng)
		errs = append(errs,
			fromDomain(&allocator.Error{Code: allocator.SoldOut, Message: randString(rng)}, linesDetails(v.Lines)),
			fromDomain(&allocator.Error{Code: allocator.Expired, Message: randString(rng)}, reservationDetails{v}),
		)
		r := allocator.Result{Err: &allocator.Error{Code: allocator.Code(rng.IntN(12)), Message: randString(rng), Lines: v.Lines}}
		if rng.IntN(2) == 0 {
			r.Reservation = v
		}
		errs = append(errs, resultError(&r))
	}
	for _, e := range errs {
		got, ok := appendError(nil, e)
		if !ok {
			t.Fatalf("%+v: not encoded", e)
		}
		if want := refError(t, e); !bytes.Equal(got, want) {
			t.Fatalf("%+v:\n got %s\nwant %s", e, got, want)
		}
		// json.Marshal of the typed details gives the same bytes too.
		plain, err := json.Marshal(struct {
			Error *apiError `json:"error"`
		}{e})
		if err != nil || !bytes.Equal(plain, got) {
			t.Fatalf("%+v: json.Marshal %s (%v), append %s", e, plain, err, got)
		}
	}
	if _, ok := appendError(nil, &apiError{Code: "x", Message: "y", Details: map[string]any{"f": func() {}}}); ok {
		t.Fatal("unencodable details encoded")
	}
}

func TestWriteErrorUnencodable(t *testing.T) {
	// The fallback body is valid JSON in the contract's shape.
	var v map[string]map[string]string
	if err := json.Unmarshal([]byte(encodingFailed), &v); err != nil || v["error"]["code"] != "internal" {
		t.Fatalf("%s: %v", encodingFailed, err)
	}
	if strings.Contains(encodingFailed, "\n") {
		t.Fatal("newline in fallback")
	}
}

func BenchmarkAppendReservation(b *testing.B) {
	v := &allocator.ReservationView{ID: 0x1234, Buyer: "buyer-123456", State: allocator.StateActive,
		Lines: []allocator.LineView{{Pool: "bench-pool-42", Qty: 1}}, CreatedAtMs: 1_795_000_000_000, ExpiresAtMs: 1_795_000_600_000}
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 512)
		for b.Loop() {
			buf = appendReservation(buf[:0], v)
		}
	})
	b.Run("marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			json.Marshal(reservationOut(v))
		}
	})
}
