package api

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/holdfast/holdfast/allocator"
)

// refReserveReq is the reserve body as encoding/json decoded it before
// decodeReserve: the reference of the differential tests.
type refLine struct {
	Pool string `json:"pool"`
	Qty  int64  `json:"qty"`
}

type refReserveReq struct {
	Buyer string    `json:"buyer"`
	Lines []refLine `json:"lines"`
	TTLMs *int64    `json:"ttl_ms"`
	Mode  *string   `json:"mode"`
	Wait  bool      `json:"wait"`
}

// asRef converts decodeReserve's result to the reference's shape.
func (r *reserveReq) asRef() refReserveReq {
	out := refReserveReq{Buyer: r.Buyer, Wait: r.Wait}
	if r.Lines != nil {
		out.Lines = make([]refLine, len(r.Lines))
		for i, l := range r.Lines {
			out.Lines[i] = refLine{Pool: l.Pool, Qty: l.Qty}
		}
	}
	if r.HasTTL {
		v := r.TTLMs
		out.TTLMs = &v
	}
	if r.HasMode {
		m := r.Mode
		out.Mode = &m
	}
	return out
}

func ptr[T any](v T) *T { return &v }

func TestDecodeReserve(t *testing.T) {
	line := refLine{Pool: "p", Qty: 1}
	accept := []struct {
		body string
		want refReserveReq
	}{
		{``, refReserveReq{}},
		{" \t\r\n", refReserveReq{}},
		{`{}`, refReserveReq{}},
		{` { } `, refReserveReq{}},
		{`{"buyer":"u-1","lines":[{"pool":"p","qty":1}]}`, refReserveReq{Buyer: "u-1", Lines: []refLine{line}}},
		{"\n{ \"buyer\" : \"u\" ,\t\"lines\" : [ { \"qty\" : 1 , \"pool\" : \"p\" } ] }\r\n", refReserveReq{Buyer: "u", Lines: []refLine{line}}},
		{`{"buyer":"u","lines":[{"pool":"p","qty":1}],"ttl_ms":60000,"mode":"partial","wait":true}`,
			refReserveReq{Buyer: "u", Lines: []refLine{line}, TTLMs: ptr[int64](60000), Mode: ptr("partial"), Wait: true}},
		{`{"wait":false,"mode":"all_or_nothing","ttl_ms":-9223372036854775808}`,
			refReserveReq{TTLMs: ptr[int64](-1 << 63), Mode: ptr("all_or_nothing")}},
		{`{"ttl_ms":9223372036854775807,"mode":""}`, refReserveReq{TTLMs: ptr[int64](1<<63 - 1), Mode: ptr("")}},
		{`{"ttl_ms":-0}`, refReserveReq{TTLMs: ptr[int64](0)}},
		{`{"buyer":null,"lines":null,"ttl_ms":null,"mode":null,"wait":null}`, refReserveReq{}},
		{`{"lines":[]}`, refReserveReq{Lines: []refLine{}}},
		{`{"lines":[null,{},{"pool":null,"qty":null}]}`, refReserveReq{Lines: []refLine{{}, {}, {}}}},
		{`{"buyer":"\u0062\"\\\/\b\f\n\r\t"}`, refReserveReq{Buyer: "b\"\\/\b\f\n\r\t"}},
		{`{"buyer":"\ud83d\ude00 \ud800 \udc00x \ud800\u0041 \uD83D\uDE00"}`, refReserveReq{Buyer: "😀 \ufffd \ufffdx \ufffdA 😀"}},
		{`{"bu\u0079er":"x"}`, refReserveReq{Buyer: "x"}}, // an escaped name is still the name
		{`{"buyer":"bjørn 日本 😀"}`, refReserveReq{Buyer: "bjørn 日本 😀"}},
		{`{"buyer":"\u0000"}`, refReserveReq{Buyer: "\x00"}},
	}
	for _, c := range accept {
		got, e := decodeReserve([]byte(c.body), nil)
		if e != nil {
			t.Errorf("%q: %s", c.body, e.Message)
			continue
		}
		if g := got.asRef(); !reflect.DeepEqual(g, c.want) {
			t.Errorf("%q:\n got %s\nwant %s", c.body, show(g), show(c.want))
		}
		// encoding/json reads the same.
		var ref refReserveReq
		if e := decodeStd([]byte(c.body), &ref); e != nil || !reflect.DeepEqual(ref, c.want) {
			t.Errorf("%q: encoding/json: %v %s", c.body, e, show(ref))
		}
	}

	reject := []struct{ body, msg string }{
		// What encoding/json refuses too.
		{`{`, "unexpected end"},
		{`[]`, "must be a JSON object"},
		{`null`, "must be a JSON object"},
		{`"x"`, "must be a JSON object"},
		{`1`, "must be a JSON object"},
		{`{"buyer":"u"} x`, "trailing data"},
		{`{"buyer":"u"}{}`, "trailing data"},
		{`{"buyer":"u"}}`, "trailing data"},
		{`{"coupon":"x"}`, `unknown field "coupon"`},
		{`{"lines":[{"pool":"p","qty":1,"sku":"x"}]}`, `unknown field "sku" in lines[0]`},
		{`{"buyer":"u",}`, "invalid character '}'"},
		{`{"buyer" "u"}`, "after object key"},
		{`{buyer:"u"}`, "invalid character 'b'"},
		{`{"buyer":'u'}`, "invalid character"},
		{`{"buyer":"u"`, "unexpected end"},
		{`{"buyer":"u`, "unexpected end"},
		{`{"buyer":"u\`, "unexpected end"},
		{`{"buyer":"\x"}`, `invalid escape 'x'`},
		{`{"buyer":"\u12"}`, `invalid \u escape`},
		{`{"buyer":"\u12G4"}`, `invalid \u escape`},
		{"{\"buyer\":\"a\tb\"}", "control character"},
		{"{\"buyer\":\"a\x00b\"}", "control character"},
		{`{"buyer":7}`, `field "buyer": expected a string, got a number`},
		{`{"buyer":true}`, `expected a string, got a boolean`},
		{`{"buyer":{}}`, `expected a string, got an object`},
		{`{"buyer":["u"]}`, `expected a string, got an array`},
		{`{"lines":{"pool":"p","qty":1}}`, `field "lines": expected an array, got an object`},
		{`{"lines":"p"}`, `expected an array`},
		{`{"lines":[1]}`, `lines[0]: expected an object, got a number`},
		{`{"lines":[[]]}`, `lines[0]: expected an object, got an array`},
		{`{"lines":[{"pool":"p","qty":[1]}]}`, `field "lines[0].qty": expected an integer, got an array`},
		{`{"lines":[{"pool":"p","qty":"1"}]}`, `expected an integer, got a string`},
		{`{"lines":[{"pool":"p","qty":1.5}]}`, `number 1.5 is not an integer`},
		{`{"lines":[{"pool":"p","qty":1e0}]}`, `number 1e0 is not an integer`},
		{`{"lines":[{"pool":"p","qty":1.0}]}`, `not an integer`},
		{`{"lines":[{"pool":"p","qty":9223372036854775808}]}`, `overflows int64`},
		{`{"lines":[{"pool":"p","qty":-9223372036854775809}]}`, `overflows int64`},
		{`{"lines":[{"pool":"p","qty":100000000000000000000}]}`, `overflows int64`},
		{`{"lines":[{"pool":"p","qty":01}]}`, `invalid character '1'`},
		{`{"lines":[{"pool":"p","qty":-}]}`, `in numeric literal`},
		{`{"lines":[{"pool":"p","qty":+1}]}`, `invalid character '+'`},
		{`{"lines":[{"pool":"p","qty":1.}]}`, `after decimal point`},
		{`{"lines":[{"pool":"p","qty":1e}]}`, `in exponent`},
		{`{"lines":[{"pool":"p","qty":1}`, `unexpected end`},
		{`{"lines":[{"pool":"p","qty":1},]}`, `invalid character ']'`},
		{`{"lines":[{"pool":"p","qty":1}}`, `after array element`},
		{`{"ttl_ms":"5"}`, `field "ttl_ms": expected an integer, got a string`},
		{`{"ttl_ms":tru}`, `expected an integer`},
		{`{"wait":"yes"}`, `field "wait": expected true or false, got a string`},
		{`{"wait":1}`, `expected true or false`},
		{`{"wait":tru}`, `expected true or false`},
		{`{"wait":nul}`, `expected true or false`},
		{`{"mode":1}`, `field "mode": expected a string`},
		{`{"buyer":"u"` + "\x00}", `invalid character '\x00'`},
		{"\ufeff{}", "must be a JSON object"},

		// Stricter than encoding/json: case-variant names, duplicates,
		// invalid UTF-8.
		{`{"BUYER":"u"}`, `unknown field "BUYER" (field names are case-sensitive: "buyer")`},
		{`{"Lines":[]}`, `unknown field "Lines" (field names are case-sensitive: "lines")`},
		{`{"lineſ":[]}`, `unknown field "lineſ" (field names are case-sensitive: "lines")`},
		{`{"lines":[{"POOL":"p","qty":1}]}`, `unknown field "POOL" in lines[0] (field names are case-sensitive: "pool")`},
		{`{"lines":[{"pool":"p","Qty":1}]}`, `unknown field "Qty" in lines[0]`},
		{`{"buyer":"a","buyer":"b"}`, `field "buyer" appears twice`},
		{`{"lines":[],"lines":[]}`, `field "lines" appears twice`},
		{`{"wait":true,"wait":true}`, `field "wait" appears twice`},
		{`{"ttl_ms":null,"ttl_ms":1}`, `field "ttl_ms" appears twice`},
		{`{"mode":"partial","mo\u0064e":"partial"}`, `field "mode" appears twice`},
		{`{"lines":[{"pool":"p","pool":"q"}]}`, `field "lines[0].pool" appears twice`},
		{`{"lines":[{},{"qty":1,"qty":1}]}`, `field "lines[1].qty" appears twice`},
		{"{\"buyer\":\"a\xffb\"}", "invalid UTF-8 in string"},
		{"{\"lines\":[{\"pool\":\"bad\xc3\"}]}", "invalid UTF-8 in string"},
		{"{\"buyer\":\"\\u0041\xed\xa0\x80\"}", "invalid UTF-8 in string"}, // an encoded surrogate
		{"{\"bu\xffyer\":1}", "invalid UTF-8 in string"},
	}
	for _, c := range reject {
		_, e := decodeReserve([]byte(c.body), nil)
		if e == nil {
			t.Errorf("%q: accepted", c.body)
			continue
		}
		if e.Status != 400 || e.Code != "invalid_argument" || !strings.HasPrefix(e.Message, "malformed JSON: ") {
			t.Errorf("%q: %+v", c.body, e)
		}
		if !strings.Contains(e.Message, c.msg) {
			t.Errorf("%q: message %q, want it to contain %q", c.body, e.Message, c.msg)
		}
	}
}

// Lines past maxLinesKept are checked but not kept.
func TestDecodeReserveManyLines(t *testing.T) {
	for _, n := range []int{allocator.MaxLines, maxLinesKept, maxLinesKept + 1, 10_000} {
		body := `{"lines":[` + strings.Repeat(`{"pool":"p","qty":1},`, n-1) + `{"pool":"p","qty":2}]}`
		got, e := decodeReserve([]byte(body), nil)
		if e != nil {
			t.Fatalf("%d lines: %s", n, e.Message)
		}
		if len(got.Lines) != min(n, maxLinesKept) {
			t.Fatalf("%d lines: kept %d", n, len(got.Lines))
		}
		bad := strings.Replace(body, `{"pool":"p","qty":2}`, `{"pool":"p","qty":2,"x":1}`, 1)
		if _, e := decodeReserve([]byte(bad), nil); e == nil {
			t.Fatalf("%d lines: unknown field in the last line accepted", n)
		}
	}
}

func TestDecodeReserveAllocs(t *testing.T) {
	body := []byte(`{"buyer":"buyer-123","lines":[{"pool":"bench-pool-7","qty":1}],"mode":"partial"}`)
	var buf [4]allocator.LineRequest
	allocs := testing.AllocsPerRun(1000, func() {
		if _, e := decodeReserve(body, buf[:0]); e != nil {
			t.Fatal(e.Message)
		}
	})
	if allocs > 2 { // the buyer and pool strings
		t.Fatalf("%v allocations per decode, want at most 2", allocs)
	}
}

// decodeStrict refuses case-variant and repeated field names on every
// endpoint, at every depth; free-form map keys are left alone.
func TestDecodeStrictFieldNames(t *testing.T) {
	cases := []struct {
		v    func() any
		body string
		ok   bool
	}{
		{func() any { return &putPoolReq{} }, `{"on_hand":1}`, true},
		{func() any { return &putPoolReq{} }, `{"On_Hand":1}`, false},
		{func() any { return &putPoolReq{} }, `{"on_hand":1,"on_hand":2}`, false},
		{func() any { return &putPoolReq{} }, `{"on_hand":1,"waitlist":{"enabled":true}}`, true},
		{func() any { return &putPoolReq{} }, `{"on_hand":1,"waitlist":{"Enabled":true}}`, false},
		{func() any { return &putPoolReq{} }, `{"on_hand":1,"waitlist":{"enabled":true,"enabled":false}}`, false},
		{func() any { return &putPoolReq{} }, `{"on_hand":1,"draw":{"opens_at":"a","OPENS_AT":"b"}}`, false},
		{func() any { return &putPoolReq{} }, `{"on_hand":1,"demand_thresholds":{"hot_rps":5}}`, true},
		{func() any { return &putPoolReq{} }, `{"on_hand":1,"demand_thresholds":{"hot_rpſ":5}}`, false},
		{func() any { return &putPoolReq{} }, `{"on_hand":1,"waitlist":null,"draw":null}`, true},
		{func() any { return &adjustReq{} }, `{"delta":1}`, true},
		{func() any { return &adjustReq{} }, `{"DELTA":1}`, false},
		{func() any { return &adjustReq{} }, `{"delta":1,"delta":1}`, false},
		{func() any { return &extendReq{} }, `{"TTL_MS":1}`, false},
		{func() any { return &emptyReq{} }, `{}`, true},
		{func() any { return &emptyReq{} }, ` `, true},
		{func() any { return &addLineReq{} }, `{"sku":"A","qty":1,"attrs":{"Size":"M","size":"L","SIZE":"XL"}}`, true},
		{func() any { return &addLineReq{} }, `{"sku":"A","qty":1,"attrs":{"size":"M","size":"L"}}`, true}, // map keys are data
		{func() any { return &addLineReq{} }, `{"SKU":"A","qty":1}`, false},
		{func() any { return &addLineReq{} }, `{"sku":"A","qty":1,"price":{"amount_minor":1,"currency":"EUR","offer_id":"o"}}`, true},
		{func() any { return &addLineReq{} }, `{"sku":"A","qty":1,"price":{"amount_minor":1,"Currency":"EUR"}}`, false},
		{func() any { return &addLineReq{} }, `{"sku":"A","qty":1,"price":{"currency":"EUR","currency":"USD"}}`, false},
		{func() any { return &mergeReq{} }, `{"source":"c_1","Policy":"sum"}`, false},
		{func() any { return &checkoutReq{} }, `{"expected_version":1,"expected_version":2}`, false},
		{func() any { return &createCartReq{} }, `{"owner":"user:1"}`, true},
		{func() any { return &createCartReq{} }, `{"Owner":"user:1"}`, false},
		{func() any { return &setQtyReq{} }, `{"qty":1,"line_version":1,"Line_Version":2}`, false},
	}
	for _, c := range cases {
		v := c.v()
		e := decodeStrict([]byte(c.body), v)
		if (e == nil) != c.ok {
			t.Errorf("%T %s: ok=%v, want %v (%v)", v, c.body, e == nil, c.ok, e)
		}
		if e != nil && (e.Status != 400 || e.Code != "invalid_argument") {
			t.Errorf("%T %s: %+v", v, c.body, e)
		}
		// encoding/json alone takes every one of these.
		if e := decodeStd([]byte(c.body), c.v()); e != nil {
			t.Errorf("%T %s: encoding/json refuses it: %s", v, c.body, e.Message)
		}
	}
}

func show(v any) string { b, _ := json.Marshal(v); return string(b) }

// oddKeys walks a JSON value that encoding/json accepted into a value of
// type t and reports whether an object of a struct type in it holds a
// key that is not exactly one of the struct's JSON names (encoding/json
// matched it case-insensitively) or an exact name twice. It relies only
// on encoding/json and reflect: it is the fuzz tests' oracle for the
// documented differences.
func oddKeys(dec *json.Decoder, t reflect.Type) (variant, dup bool) {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	tok, err := dec.Token()
	if err != nil {
		panic(err)
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return false, false
	}
	var elem reflect.Type
	if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array || t.Kind() == reflect.Map) {
		elem = t.Elem()
	}
	seen := map[string]bool{}
	for dec.More() {
		sub := elem
		if d == '{' {
			kt, err := dec.Token()
			if err != nil {
				panic(err)
			}
			k := kt.(string)
			if t != nil && t.Kind() == reflect.Struct {
				sub = nil
				var fold reflect.Type
				exact := false
				for i := range t.NumField() {
					f := t.Field(i)
					name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
					if name == "" {
						name = f.Name
					}
					if name == k {
						exact, sub = true, f.Type
						break
					}
					if fold == nil && strings.EqualFold(name, k) {
						fold = f.Type
					}
				}
				if !exact {
					variant, sub = true, fold
				} else if seen[k] {
					dup = true
				}
				seen[k] = true
			}
		}
		v, du := oddKeys(dec, sub)
		variant, dup = variant || v, dup || du
	}
	if _, err := dec.Token(); err != nil {
		panic(err)
	}
	return variant, dup
}

func oddKeysOf(body []byte, v any) (variant, dup bool) {
	if len(bytes.Trim(body, " \t\r\n")) == 0 {
		return false, false
	}
	return oddKeys(json.NewDecoder(bytes.NewReader(body)), reflect.TypeOf(v))
}

// FuzzReserveDecoder is the differential test of decodeReserve against
// encoding/json (decodeStd, the old decoder) and against decodeStrict
// (encoding/json plus checkKeys). The documented differences:
//
//   - decodeReserve refuses field names that only match case-insensitively
//     and fields given twice; encoding/json takes them (decodeStrict does
//     not);
//   - decodeReserve refuses invalid UTF-8 in strings; encoding/json and
//     decodeStrict replace it with U+FFFD;
//   - decodeReserve keeps at most maxLinesKept lines.
//
// Anything else must agree: both refuse, or both accept with equal values.
func FuzzReserveDecoder(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `{"buyer":"u-1","lines":[{"pool":"sneaker-42","qty":1}],"ttl_ms":120000,"mode":"all_or_nothing","wait":false}`,
		`{"BUYER":"u","lines":[]}`, `{"buyer":"a","buyer":"b"}`, "{\"buyer\":\"a\xffb\"}", `{"lines":[null,{}]}`,
		`{"buyer":"\ud800\u0041"}`, `{"lines":[{"pool":"p","qty":-0}]}`, `{"ttl_ms":1e3}`, `[]`, `null`, `{"x":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		mine, e := decodeReserve(body, nil)
		if e != nil && (e.Status != 400 || e.Code != "invalid_argument" || !strings.HasPrefix(e.Message, "malformed JSON: ")) {
			t.Fatalf("%q: refused with %+v", body, e)
		}
		var ref refReserveReq
		eRef := decodeStd(body, &ref)
		var strict refReserveReq
		eStrict := decodeStrict(body, &strict)

		if eRef != nil {
			if e == nil {
				t.Fatalf("%q: accepted, encoding/json refuses: %s\ngot %s", body, eRef.Message, show(mine.asRef()))
			}
			if eStrict == nil {
				t.Fatalf("%q: decodeStrict accepts, encoding/json refuses: %s", body, eRef.Message)
			}
			return
		}
		variant, dup := oddKeysOf(body, &ref)
		badUTF8 := !utf8.Valid(body) // outside strings it is a syntax error
		if (eStrict != nil) != (variant || dup) {
			t.Fatalf("%q: decodeStrict: %v; case-variant name %v, repeated name %v", body, eStrict, variant, dup)
		}
		if e != nil {
			if !variant && !dup && !badUTF8 {
				t.Fatalf("%q: refused (%s), encoding/json accepts %s", body, e.Message, show(ref))
			}
			return
		}
		if variant || dup || badUTF8 {
			t.Fatalf("%q: accepted, though variant=%v dup=%v badUTF8=%v", body, variant, dup, badUTF8)
		}
		if !reflect.DeepEqual(strict, ref) {
			t.Fatalf("%q: decodeStrict decoded %s, encoding/json %s", body, show(strict), show(ref))
		}
		got := mine.asRef()
		if len(ref.Lines) > maxLinesKept {
			if len(got.Lines) != maxLinesKept {
				t.Fatalf("%q: kept %d of %d lines", body, len(got.Lines), len(ref.Lines))
			}
			ref.Lines = ref.Lines[:maxLinesKept]
		}
		if !reflect.DeepEqual(got, ref) {
			t.Fatalf("%q:\n got %s\nwant %s", body, show(got), show(ref))
		}
	})
}

// FuzzStrictKeys checks decodeStrict against encoding/json on the other
// request types: it refuses exactly the bodies with a case-variant or
// repeated field name, and decodes the rest the same.
func FuzzStrictKeys(f *testing.F) {
	for _, s := range []string{
		`{"on_hand":1,"waitlist":{"enabled":true,"Enabled":false},"draw":{"opens_at":"x","seed":"s"}}`,
		`{"sku":"A","qty":1,"attrs":{"k":"v","K":"w"},"price":{"amount_minor":1,"currency":"EUR"}}`,
		`{"source":"c_1","policy":"sum"}`, `{"expected_version":1,"ttl_ms":5,"mode":"partial"}`,
		`{"demand_thresholds":{"warm_rps":1,"warm_rps":2}}`, `{"qty":1,"line_version":2}`,
	} {
		f.Add([]byte(s))
	}
	types := []func() any{
		func() any { return &putPoolReq{} }, func() any { return &addLineReq{} }, func() any { return &mergeReq{} },
		func() any { return &checkoutReq{} }, func() any { return &setQtyReq{} }, func() any { return &adjustReq{} },
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, mk := range types {
			ref, strict := mk(), mk()
			eRef, eStrict := decodeStd(body, ref), decodeStrict(body, strict)
			if eRef != nil {
				if eStrict == nil {
					t.Fatalf("%T %q: decodeStrict accepts, encoding/json refuses: %s", ref, body, eRef.Message)
				}
				continue
			}
			variant, dup := oddKeysOf(body, ref)
			if (eStrict != nil) != (variant || dup) {
				t.Fatalf("%T %q: decodeStrict: %v; case-variant name %v, repeated name %v", ref, body, eStrict, variant, dup)
			}
			if eStrict == nil && !reflect.DeepEqual(ref, strict) {
				t.Fatalf("%T %q: decoded %s, encoding/json %s", ref, body, show(strict), show(ref))
			}
		}
	})
}

func BenchmarkDecodeReserve(b *testing.B) {
	body := []byte(`{"buyer":"buyer-123456","lines":[{"pool":"bench-pool-42","qty":1}]}`)
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		var buf [4]allocator.LineRequest
		for b.Loop() {
			decodeReserve(body, buf[:0])
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var r refReserveReq
			decodeStd(body, &r)
		}
	})
}
