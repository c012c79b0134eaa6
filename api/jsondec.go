package api

import (
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/holdfast/holdfast/allocator"
)

// This file holds the request-side JSON reader: a strict, allocation-light
// decoder for the hot POST /v1/reservations body (decodeReserve), and the
// field-name check decodeStrict runs after encoding/json (checkKeys).
//
// Rules shared by every endpoint, beyond what encoding/json enforces:
//
//   - Field names match exactly. encoding/json matches them
//     case-insensitively ({"BUYER": ...} would set buyer); the contract
//     rejects unknown fields, and "BUYER" is not a field.
//   - A field given twice in one object is refused (400): encoding/json
//     silently keeps the last one (merging nested objects and arrays
//     element by element), so two parsers could read two different
//     requests from one body. Keys of free-form maps (a cart line's
//     attrs) are data, not fields, and keep encoding/json's last-wins.
//
// And for the reserve body only: a string holding invalid UTF-8 is refused
// (encoding/json replaces the bad bytes with U+FFFD). Every string of that
// body is an id or an enum, which U+FFFD can never satisfy, so the answer
// stays 400 either way; only the message changes.

// jsonReader scans one JSON text held in memory.
type jsonReader struct {
	b []byte
	i int
	// strictUTF8 refuses invalid UTF-8 inside strings; otherwise it is
	// replaced with U+FFFD, as encoding/json does.
	strictUTF8 bool
	buf        []byte // unescaped string of the last str call, reused
}

func malformed(msg string) *apiError { return badRequest("malformed JSON: " + msg) }

func (r *jsonReader) ws() {
	for r.i < len(r.b) {
		switch r.b[r.i] {
		case ' ', '\t', '\r', '\n':
			r.i++
		default:
			return
		}
	}
}

// peek returns the next byte, 0 at the end of input.
func (r *jsonReader) peek() byte {
	if r.i < len(r.b) {
		return r.b[r.i]
	}
	return 0
}

// syntaxErr describes the byte at r.i as unexpected.
func (r *jsonReader) syntaxErr(context string) *apiError {
	if r.i >= len(r.b) {
		return malformed("unexpected end of JSON input")
	}
	return malformed("invalid character " + quoteChar(r.b[r.i]) + " " + context + " at offset " + strconv.Itoa(r.i))
}

// quoteChar renders c for a message, as encoding/json does.
func quoteChar(c byte) string {
	if c == '\'' {
		return `'\''`
	}
	if c == '"' {
		return `'"'`
	}
	s := strconv.Quote(string(rune(c)))
	return "'" + s[1:len(s)-1] + "'"
}

// str reads a string at r.i (which must be '"') and returns its unescaped
// contents. The result aliases the input or r.buf: it is valid until the
// next call.
func (r *jsonReader) str() ([]byte, *apiError) {
	b := r.b
	start := r.i + 1
	for i := start; i < len(b); i++ {
		c := b[i]
		if c == '"' {
			r.i = i + 1
			return b[start:i], nil
		}
		if c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			return r.strSlow(start, i)
		}
	}
	r.i = len(b)
	return nil, malformed("unexpected end of JSON input")
}

// strSlow continues str at i, the first byte needing care, unescaping
// into r.buf with encoding/json's rules: \uXXXX surrogate pairs combine,
// a lone surrogate becomes U+FFFD.
func (r *jsonReader) strSlow(start, i int) ([]byte, *apiError) {
	b := r.b
	out := append(r.buf[:0], b[start:i]...)
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			r.i = i + 1
			r.buf = out
			return out, nil
		case c == '\\':
			if i+1 >= len(b) {
				r.i = len(b)
				return nil, malformed("unexpected end of JSON input")
			}
			switch e := b[i+1]; e {
			case '"', '\\', '/':
				out = append(out, e)
				i += 2
			case 'b':
				out = append(out, '\b')
				i += 2
			case 'f':
				out = append(out, '\f')
				i += 2
			case 'n':
				out = append(out, '\n')
				i += 2
			case 'r':
				out = append(out, '\r')
				i += 2
			case 't':
				out = append(out, '\t')
				i += 2
			case 'u':
				rr := hex4(b[i+2:])
				if rr < 0 {
					r.i = i
					return nil, malformed("invalid \\u escape in string at offset " + strconv.Itoa(i))
				}
				i += 6
				if utf16.IsSurrogate(rr) {
					if i+1 < len(b) && b[i] == '\\' && b[i+1] == 'u' {
						if rr1 := hex4(b[i+2:]); rr1 >= 0 {
							if dec := utf16.DecodeRune(rr, rr1); dec != utf8.RuneError {
								out = utf8.AppendRune(out, dec)
								i += 6
								continue
							}
						}
					}
					rr = utf8.RuneError
				}
				out = utf8.AppendRune(out, rr)
			default:
				r.i = i
				return nil, malformed("invalid escape " + quoteChar(e) + " in string at offset " + strconv.Itoa(i))
			}
		case c < 0x20:
			r.i = i
			return nil, malformed("control character in string at offset " + strconv.Itoa(i))
		case c < utf8.RuneSelf:
			out = append(out, c)
			i++
		default:
			rr, size := utf8.DecodeRune(b[i:])
			if rr == utf8.RuneError && size == 1 {
				if r.strictUTF8 {
					r.i = i
					return nil, malformed("invalid UTF-8 in string at offset " + strconv.Itoa(i))
				}
				out = utf8.AppendRune(out, utf8.RuneError)
			} else {
				out = append(out, b[i:i+size]...)
			}
			i += size
		}
	}
	r.i = len(b)
	r.buf = out
	return nil, malformed("unexpected end of JSON input")
}

// hex4 decodes the 4 hex digits of a \u escape from the start of b, or -1.
func hex4(b []byte) rune {
	if len(b) < 4 {
		return -1
	}
	var v rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		v = v<<4 | rune(c)
	}
	return v
}

// number scans a JSON number at r.i and returns its text and whether it
// is an integer (no fraction, no exponent).
func (r *jsonReader) number() (text []byte, integer bool, e *apiError) {
	b, i := r.b, r.i
	start := i
	integer = true
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		r.i = i
		return nil, false, r.syntaxErr("in numeric literal")
	}
	if i < len(b) && b[i] == '.' {
		integer = false
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			r.i = i
			return nil, false, r.syntaxErr("after decimal point in numeric literal")
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		integer = false
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			r.i = i
			return nil, false, r.syntaxErr("in exponent of numeric literal")
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	r.i = i
	return b[start:i], integer, nil
}

// literal consumes word (true, false, null) if it is next.
func (r *jsonReader) literal(word string) bool {
	if len(r.b)-r.i >= len(word) && string(r.b[r.i:r.i+len(word)]) == word {
		r.i += len(word)
		return true
	}
	return false
}

// kindAt names the JSON type of the value starting at r.i, for messages.
func (r *jsonReader) kindAt() string {
	switch r.peek() {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// isValueStart reports whether c can begin a JSON value.
func isValueStart(c byte) bool {
	switch c {
	case '"', '{', '[', 't', 'f', 'n', '-':
		return true
	}
	return c >= '0' && c <= '9'
}

// field names a field for messages: name, or lines[i].name.
func fieldName(line int, name string) string {
	if line < 0 {
		return name
	}
	return "lines[" + strconv.Itoa(line) + "]." + name
}

func typeErr(r *jsonReader, line int, name, want string) *apiError {
	if !isValueStart(r.peek()) {
		return r.syntaxErr("looking for beginning of value")
	}
	return malformed("field " + strconv.Quote(fieldName(line, name)) + ": expected " + want + ", got " + r.kindAt())
}

// int64Val reads an integer field. null leaves it unset (ok false), as
// encoding/json does.
func (r *jsonReader) int64Val(line int, name string) (v int64, ok bool, e *apiError) {
	if r.literal("null") {
		return 0, false, nil
	}
	c := r.peek()
	if c != '-' && (c < '0' || c > '9') {
		return 0, false, typeErr(r, line, name, "an integer")
	}
	text, integer, e := r.number()
	if e != nil {
		return 0, false, e
	}
	if !integer {
		return 0, false, malformed("field " + strconv.Quote(fieldName(line, name)) + ": number " + string(text) + " is not an integer")
	}
	v, ok = parseInt64(text)
	if !ok {
		return 0, false, malformed("field " + strconv.Quote(fieldName(line, name)) + ": number " + string(text) + " overflows int64")
	}
	return v, true, nil
}

// parseInt64 parses the text of a JSON integer (-?(0|[1-9][0-9]*)).
func parseInt64(text []byte) (int64, bool) {
	neg := text[0] == '-'
	if neg {
		text = text[1:]
	}
	if len(text) > 19 {
		return 0, false
	}
	var u uint64
	for _, c := range text {
		u = u*10 + uint64(c-'0') // at most 19 digits: fits in uint64
	}
	if neg {
		if u > 1<<63 {
			return 0, false
		}
		return -int64(u), true // -(1<<63) wraps to itself: MinInt64
	}
	if u > 1<<63-1 {
		return 0, false
	}
	return int64(u), true
}

// strVal reads a string field. null leaves it unset (ok false).
func (r *jsonReader) strVal(line int, name string) (s []byte, ok bool, e *apiError) {
	if r.literal("null") {
		return nil, false, nil
	}
	if r.peek() != '"' {
		return nil, false, typeErr(r, line, name, "a string")
	}
	s, e = r.str()
	return s, e == nil, e
}

// key reads an object key and the colon after it.
func (r *jsonReader) key() ([]byte, *apiError) {
	r.ws()
	if r.peek() != '"' {
		return nil, r.syntaxErr("looking for beginning of object key string")
	}
	k, e := r.str()
	if e != nil {
		return nil, e
	}
	r.ws()
	if r.peek() != ':' {
		return nil, r.syntaxErr("after object key")
	}
	r.i++
	r.ws()
	return k, nil
}

// next consumes the separator after a member or element: it reports
// whether another follows (',') or the container ended (end).
func (r *jsonReader) next(end byte) (more bool, e *apiError) {
	r.ws()
	switch r.peek() {
	case ',':
		r.i++
		return true, nil
	case end:
		r.i++
		return false, nil
	}
	if end == '}' {
		return false, r.syntaxErr("after object key:value pair")
	}
	return false, r.syntaxErr("after array element")
}

// unknownField refuses key, pointing out a field it only differs from in
// case (encoding/json would have taken it).
func unknownField(line int, key []byte, known ...string) *apiError {
	k := string(key)
	msg := "unknown field " + strconv.Quote(k)
	if line >= 0 {
		msg += " in lines[" + strconv.Itoa(line) + "]"
	}
	for _, f := range known {
		if strings.EqualFold(k, f) {
			msg += ` (field names are case-sensitive: "` + f + `")`
			break
		}
	}
	return malformed(msg)
}

func duplicateField(line int, name string) *apiError {
	return malformed("field " + strconv.Quote(fieldName(line, name)) + " appears twice")
}

// reserveReq is a decoded POST /v1/reservations body. The optional fields
// carry their presence; JSON null is the same as absent.
type reserveReq struct {
	Buyer   string
	Lines   []allocator.LineRequest // nil: absent or null; else the array
	TTLMs   int64
	HasTTL  bool
	Mode    string
	HasMode bool
	Wait    bool
}

// Reservation modes, interned: a decoded mode is usually one of them.
const (
	modeAllOrNothing = "all_or_nothing"
	modePartial      = "partial"
)

// maxLinesKept bounds the lines a reserve body keeps: one more than a
// request may hold, so the handler still refuses an oversized request,
// while a hostile 1 MiB body of lines cannot make the decoder allocate
// hundreds of thousands of them. Lines past it are parsed and checked,
// not kept.
const maxLinesKept = allocator.MaxLines + 1

// decodeReserve decodes a POST /v1/reservations body: one JSON object
// with the fields buyer, lines ([{pool, qty}]), ttl_ms, mode and wait,
// whitespace around it and nothing else. It accepts what decodeStrict
// accepts into the same fields, with the stricter rules at the top of this
// file, and answers 400 invalid_argument for anything else. An empty body
// decodes as {}, as in decodeStrict. Lines are appended to lines (the
// caller's scratch space, may be nil).
func decodeReserve(body []byte, lines []allocator.LineRequest) (reserveReq, *apiError) {
	var req reserveReq
	r := jsonReader{b: body, strictUTF8: true}
	r.ws()
	if r.i == len(body) {
		return req, nil
	}
	if body[r.i] != '{' {
		return req, malformed("the body must be a JSON object")
	}
	r.i++
	r.ws()
	if r.peek() == '}' {
		r.i++
	} else {
		const (
			seenBuyer = 1 << iota
			seenLines
			seenTTL
			seenMode
			seenWait
		)
		var seen uint8
		for {
			k, e := r.key()
			if e != nil {
				return req, e
			}
			var bit uint8
			switch string(k) {
			case "buyer":
				bit = seenBuyer
			case "lines":
				bit = seenLines
			case "ttl_ms":
				bit = seenTTL
			case "mode":
				bit = seenMode
			case "wait":
				bit = seenWait
			default:
				return req, unknownField(-1, k, "buyer", "lines", "ttl_ms", "mode", "wait")
			}
			if seen&bit != 0 {
				return req, duplicateField(-1, string(k))
			}
			seen |= bit
			switch bit {
			case seenBuyer:
				s, ok, e := r.strVal(-1, "buyer")
				if e != nil {
					return req, e
				}
				if ok {
					req.Buyer = string(s)
				}
			case seenLines:
				if req.Lines, e = r.lines(lines); e != nil {
					return req, e
				}
			case seenTTL:
				if req.TTLMs, req.HasTTL, e = r.int64Val(-1, "ttl_ms"); e != nil {
					return req, e
				}
			case seenMode:
				s, ok, e := r.strVal(-1, "mode")
				if e != nil {
					return req, e
				}
				req.HasMode = ok
				switch {
				case !ok:
					req.Mode = ""
				case string(s) == modeAllOrNothing:
					req.Mode = modeAllOrNothing
				case string(s) == modePartial:
					req.Mode = modePartial
				default:
					req.Mode = string(s)
				}
			case seenWait:
				switch {
				case r.literal("true"):
					req.Wait = true
				case r.literal("false"):
					req.Wait = false
				case r.literal("null"):
				default:
					return req, typeErr(&r, -1, "wait", "true or false")
				}
			}
			more, e := r.next('}')
			if e != nil {
				return req, e
			}
			if !more {
				break
			}
		}
	}
	r.ws()
	if r.i != len(body) {
		return req, malformed("trailing data after the object")
	}
	return req, nil
}

// lines reads the value of "lines": null (nil) or an array of line
// objects, appended to dst.
func (r *jsonReader) lines(dst []allocator.LineRequest) ([]allocator.LineRequest, *apiError) {
	if r.literal("null") {
		return nil, nil
	}
	if r.peek() != '[' {
		return nil, typeErr(r, -1, "lines", "an array")
	}
	r.i++
	out := dst[:0]
	if out == nil {
		out = []allocator.LineRequest{} // [] is not null: non-nil, as encoding/json
	}
	r.ws()
	if r.peek() == ']' {
		r.i++
		return out, nil
	}
	for n := 0; ; n++ {
		r.ws()
		l, e := r.line(n)
		if e != nil {
			return nil, e
		}
		if n < maxLinesKept {
			out = append(out, l)
		}
		more, e := r.next(']')
		if e != nil {
			return nil, e
		}
		if !more {
			return out, nil
		}
	}
}

// line reads one element of lines: an object with pool and qty, or null
// (a zero line, which validation then refuses).
func (r *jsonReader) line(n int) (allocator.LineRequest, *apiError) {
	var l allocator.LineRequest
	if r.literal("null") {
		return l, nil
	}
	if r.peek() != '{' {
		if !isValueStart(r.peek()) {
			return l, r.syntaxErr("looking for beginning of value")
		}
		return l, malformed("lines[" + strconv.Itoa(n) + "]: expected an object, got " + r.kindAt())
	}
	r.i++
	r.ws()
	if r.peek() == '}' {
		r.i++
		return l, nil
	}
	var seenPool, seenQty bool
	for {
		k, e := r.key()
		if e != nil {
			return l, e
		}
		switch string(k) {
		case "pool":
			if seenPool {
				return l, duplicateField(n, "pool")
			}
			seenPool = true
			s, ok, e := r.strVal(n, "pool")
			if e != nil {
				return l, e
			}
			if ok {
				l.Pool = string(s)
			}
		case "qty":
			if seenQty {
				return l, duplicateField(n, "qty")
			}
			seenQty = true
			v, ok, e := r.int64Val(n, "qty")
			if e != nil {
				return l, e
			}
			if ok {
				l.Qty = v
			}
		default:
			return l, unknownField(n, k, "pool", "qty")
		}
		more, e := r.next('}')
		if e != nil {
			return l, e
		}
		if !more {
			return l, nil
		}
	}
}

// ---- field-name check for decodeStrict ----

// keySchema is what checkKeys knows of a Go type's JSON shape: for a
// struct, its fields by exact JSON name; for a map or slice, its elements.
// nil stands for a value whose insides are not checked.
type keySchema struct {
	fields map[string]int // struct: JSON name -> index in sub
	names  []string       // struct: JSON names, by index
	sub    []*keySchema   // struct: the field's schema, by index
	elem   *keySchema     // map value or slice element
	isMap  bool
}

var keySchemas sync.Map // reflect.Type -> *keySchema

// schemaOf returns the schema of t, cached.
func schemaOf(t reflect.Type) *keySchema {
	if s, ok := keySchemas.Load(t); ok {
		return s.(*keySchema)
	}
	s := buildSchema(t, 0)
	keySchemas.Store(t, s)
	return s
}

func buildSchema(t reflect.Type, depth int) *keySchema {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if depth > 16 { // recursive types: stop checking past this depth
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		s := &keySchema{fields: make(map[string]int)}
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() || f.Anonymous {
				continue // no request type embeds; encoding/json ignores unexported fields
			}
			name := f.Name
			if tag, ok := f.Tag.Lookup("json"); ok {
				if tag == "-" {
					continue
				}
				if n, _, _ := strings.Cut(tag, ","); n != "" {
					name = n
				}
			}
			s.fields[name] = len(s.sub)
			s.names = append(s.names, name)
			s.sub = append(s.sub, buildSchema(f.Type, depth+1))
		}
		return s
	case reflect.Map:
		return &keySchema{isMap: true, elem: buildSchema(t.Elem(), depth+1)}
	case reflect.Slice, reflect.Array:
		if e := buildSchema(t.Elem(), depth+1); e != nil {
			return &keySchema{elem: e}
		}
	}
	return nil
}

// checkKeys walks a body encoding/json has accepted into a value of v's
// type and refuses struct fields whose name is not exactly a field's JSON
// name (encoding/json took them case-insensitively) and fields given
// twice.
func checkKeys(body []byte, v any) *apiError {
	r := jsonReader{b: body}
	r.ws()
	return r.checkValue(schemaOf(reflect.TypeOf(v)))
}

func (r *jsonReader) checkValue(s *keySchema) *apiError {
	r.ws()
	switch r.peek() {
	case '{':
		r.i++
		r.ws()
		if r.peek() == '}' {
			r.i++
			return nil
		}
		var seen uint64 // struct fields seen, by index (request types have fewer than 64)
		for {
			k, e := r.key()
			if e != nil {
				return e
			}
			var sub *keySchema
			switch {
			case s == nil:
			case s.isMap:
				sub = s.elem
			default:
				idx, ok := s.fields[string(k)]
				if !ok {
					return unknownField(-1, k, s.names...)
				}
				if idx < 64 {
					if seen&(1<<idx) != 0 {
						return malformed("field " + strconv.Quote(s.names[idx]) + " appears twice")
					}
					seen |= 1 << idx
				}
				sub = s.sub[idx]
			}
			if e := r.checkValue(sub); e != nil {
				return e
			}
			more, e := r.next('}')
			if e != nil {
				return e
			}
			if !more {
				return nil
			}
		}
	case '[':
		r.i++
		r.ws()
		if r.peek() == ']' {
			r.i++
			return nil
		}
		var elem *keySchema
		if s != nil {
			elem = s.elem
		}
		for {
			if e := r.checkValue(elem); e != nil {
				return e
			}
			more, e := r.next(']')
			if e != nil {
				return e
			}
			if !more {
				return nil
			}
		}
	case '"':
		_, e := r.str()
		return e
	case 't':
		if r.literal("true") {
			return nil
		}
	case 'f':
		if r.literal("false") {
			return nil
		}
	case 'n':
		if r.literal("null") {
			return nil
		}
	default:
		_, _, e := r.number()
		return e
	}
	return r.syntaxErr("in literal")
}
