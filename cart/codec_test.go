package cart

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"testing"

	"github.com/holdfast/holdfast/allocator"
	"github.com/holdfast/holdfast/internal/wire"
)

func sampleCommands() []Command {
	full := item("sku-1", "red")
	full.Attrs = []Attr{{"size", "42"}, {"engraving", "Zoë"}}
	full.Pool = "custom/pool"
	return []Command{
		{Kind: KindCreate, Owner: "anon:abc"},
		{Kind: KindCreate, Owner: "user:42", IdemKey: "k-1", ReqHash: [HashLen]byte{1, 2, 3, 15: 9}},
		addCmd("c_1", item("A", ""), 2),
		addCmd("c_1f", full, allocator.MaxQty),
		addCmd("c_2", LineInput{SKU: "bare"}, 1),
		{Kind: KindSetQty, Cart: "c_1", LineID: "l_3", Qty: 7, LineVersion: 12},
		{Kind: KindDeleteLine, Cart: "c_1", LineID: "l_a", LineVersion: 4, IdemKey: "del"},
		{Kind: KindMerge, Cart: "c_1", Source: "c_2"},
		{Kind: KindMerge, Cart: "c_1", Source: "c_2", Policy: PolicySourceWins},
		{Kind: KindReview, Cart: "c_3"},
		{Kind: KindCheckout, Cart: "c_1", ExpectedVersion: 42, TTLMs: 120_000},
		{Kind: KindCheckout, Cart: "c_1", ExpectedVersion: 1, Partial: true, IdemKey: "co"},
		{Kind: KindConfirmCheckout, Checkout: "co_1"},
	}
}

func TestCommandRoundTrip(t *testing.T) {
	for _, c := range sampleCommands() {
		b := c.AppendEncode(nil)
		got, err := DecodeCommand(b)
		if err != nil {
			t.Fatalf("%v: %v", c.Kind, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("round trip %v:\n got %+v\nwant %+v", c.Kind, got, c)
		}
		if e := c.Validate(); e != nil {
			t.Fatalf("sample %v invalid: %v", c.Kind, e)
		}
		// Every strict prefix and any trailing byte is corrupt.
		for i := range b {
			if _, err := DecodeCommand(b[:i]); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%v prefix %d: %v", c.Kind, i, err)
			}
		}
		if _, err := DecodeCommand(append(b, 0)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%v trailing: %v", c.Kind, err)
		}
	}
	for _, b := range [][]byte{nil, {}, {1, 0}, {byte(KindCreate), 4}, {byte(KindMerge), 0, 3, 'c', '_', '1', 3, 'c', '_', '2', 9}} {
		if _, err := DecodeCommand(b); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%x: %v", b, err)
		}
	}
}

func checkDecode(t *testing.T, data []byte) {
	c, err := DecodeCommand(data)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error does not wrap ErrCorrupt: %v", err)
		}
		return
	}
	again, err := DecodeCommand(c.AppendEncode(nil))
	if err != nil || !reflect.DeepEqual(again, c) {
		t.Fatalf("re-encode: %v\n%+v\n%+v", err, again, c)
	}
	// Applying whatever decodes never panics.
	h := newHarness(t, Config{})
	h.pools.put(pool("A", ""), 5, 1)
	h.create("user:1")
	h.add("c_1", item("A", ""), 1)
	h.apply(c)
	h.m.Tick(h.st, h.now+day)
}

// FuzzDecodeCommand: seeds are in testdata/fuzz/FuzzDecodeCommand plus the
// sample commands.
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range sampleCommands() {
		f.Add(c.AppendEncode(nil))
	}
	f.Fuzz(checkDecode)
}

// TestWriteFuzzSeeds regenerates testdata/fuzz/FuzzDecodeCommand when
// CART_WRITE_SEEDS=1.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("CART_WRITE_SEEDS") != "1" {
		t.Skip("set CART_WRITE_SEEDS=1 to regenerate the seed corpus")
	}
	names := []string{"create_anon", "create_idem", "add", "add_full", "add_bare", "set_qty", "delete_idem",
		"merge_review", "merge_source_wins", "review", "checkout", "checkout_partial_idem", "confirm"}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeCommand")
	for i, c := range sampleCommands() {
		body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(c.AppendEncode(nil))) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, names[i]), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// randomRun applies a random but reproducible sequence of commands and
// ticks, returning the store and the encoded results.
func randomRun(tb testing.TB, seed uint64, steps int, stats map[string]int) (*memStore, []byte) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	h := newHarness(tb, Config{IdleTTLMs: 20 * day, PriceAgeMs: 5 * day, IdempotencyTTLMs: 2 * day, CheckoutRetentionMs: 3 * day, SweepPerTick: 3})
	for _, p := range []string{"A", "B", "C", "D"} {
		h.pools.put(pool(p, ""), int64(rng.IntN(6)), int64(rng.IntN(3)))
		h.pools.put(pool(p, "red"), 1000, 0)
	}
	var out []byte
	carts := 0
	checkouts := 0
	pick := func(n int) int { return rng.IntN(max(n, 1)) + 1 }
	skus := []string{"A", "B", "C", "D", "E"}
	variants := []string{"", "red"}
	for range steps {
		if rng.IntN(20) == 0 {
			h.at(h.now + rng.Int64N(3*day))
		} else {
			h.at(h.now + rng.Int64N(10*60*1000))
		}
		cartID := FormatCartID(uint64(pick(carts)))
		var c Command
		switch k := rng.IntN(20); {
		case k < 2 || carts == 0:
			c = Command{Kind: KindCreate, Owner: []string{"anon:", "user:"}[rng.IntN(2)] + strconv.Itoa(rng.IntN(5))}
		case k < 9:
			in := item(skus[rng.IntN(len(skus))], variants[rng.IntN(2)])
			if rng.IntN(3) == 0 {
				in.Attrs = []Attr{{"gift", strconv.Itoa(rng.IntN(2))}}
			}
			in.Price.AmountMinor = int64(rng.IntN(3)) * 100
			c = addCmd(cartID, in, int64(1+rng.IntN(3)))
		case k < 13:
			c = Command{Kind: KindSetQty, Cart: cartID, Qty: int64(1 + rng.IntN(4))}
			if k == 12 {
				c.Kind = KindDeleteLine
			}
			if cart, e := Get(h.st, cartID); e == nil && len(cart.Lines) > 0 {
				l := cart.Lines[rng.IntN(len(cart.Lines))]
				c.LineID, c.LineVersion = l.ID, l.LineVersion-int64(rng.IntN(2))
			} else {
				c.LineID, c.LineVersion = "l_1", 1
			}
		case k < 15:
			c = Command{Kind: KindMerge, Cart: cartID, Source: FormatCartID(uint64(pick(carts))), Policy: Policy(rng.IntN(int(numPolicies)))}
		case k < 16:
			c = Command{Kind: KindReview, Cart: cartID}
		case k < 18:
			c = Command{Kind: KindCheckout, Cart: cartID, ExpectedVersion: 1, Partial: rng.IntN(2) == 0, TTLMs: int64(rng.IntN(3)) * hour}
			if cart, e := Get(h.st, cartID); e == nil {
				c.ExpectedVersion = cart.Version - int64(rng.IntN(2)) // sometimes stale
			}
		default:
			c = Command{Kind: KindConfirmCheckout, Checkout: formatID(checkoutIDPrefix, uint64(pick(checkouts)))}
		}
		if rng.IntN(4) == 0 {
			c.IdemKey = "key-" + strconv.Itoa(rng.IntN(40))
			c.ReqHash[0] = byte(rng.IntN(2))
		}
		r := h.apply(c)
		if stats != nil {
			what := "ok"
			if r.Err != nil {
				what = r.Err.Code.String()
			}
			stats[c.Kind.String()+"/"+what]++
		}
		if r.Err == nil && r.Created && c.Kind == KindCreate && !r.Replayed {
			carts++
		}
		if r.Err == nil && r.Created && c.Kind == KindCheckout && !r.Replayed {
			checkouts++
		}
		out = appendResult(out, &r)
		out = wire.AppendBool(out, r.Replayed)
		h.m.Tick(h.st, h.now)
	}
	return h.st, out
}

func TestDeterminism(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		stats := map[string]int{}
		st1, res1 := randomRun(t, seed, 1500, stats)
		if seed == 1 {
			keys := slices.Sorted(maps.Keys(stats))
			for _, k := range keys {
				t.Logf("%s: %d", k, stats[k])
			}
		}
		st2, res2 := randomRun(t, seed, 1500, nil)
		if d1, d2 := st1.dump(), st2.dump(); d1 != d2 {
			t.Fatalf("seed %d: stores differ", seed)
		}
		if !bytes.Equal(res1, res2) {
			t.Fatalf("seed %d: results differ", seed)
		}
		if len(st1.m) < 10 {
			t.Fatalf("seed %d: only %d keys: the run does too little", seed, len(st1.m))
		}
		checkInvariants(t, st1)
	}
}

// checkInvariants: every cart and checkout decodes, has exactly its one
// index entry, lines are unique by id and identity, and every index entry
// has its object.
func checkInvariants(t *testing.T, st *memStore) {
	t.Helper()
	for k, v := range st.m {
		key := []byte(k)
		switch key[1] {
		case subCart:
			c, err := decodeCart(v)
			if err != nil {
				t.Fatalf("cart %x: %v", key, err)
			}
			n := binaryNum(key[2:])
			if _, ok := st.m[string(dueKey(subIdle, c.idleDueMs, be64(n)))]; !ok {
				t.Fatalf("cart %s has no idle entry", c.ID)
			}
			if c.ID != FormatCartID(n) {
				t.Fatalf("cart id %s under %x", c.ID, key)
			}
			for i := range c.Lines {
				for j := range c.Lines[:i] {
					a, b := &c.Lines[i], &c.Lines[j]
					if a.ID == b.ID || sameIdentity(a, b.SKU, b.Variant, b.Seller, b.Fulfillment, b.Attrs) {
						t.Fatalf("cart %s: lines %s and %s collide", c.ID, a.ID, b.ID)
					}
				}
				if c.Lines[i].LineVersion > c.Version || c.Lines[i].Qty < 1 {
					t.Fatalf("cart %s line %+v", c.ID, c.Lines[i])
				}
			}
			if (c.State == StateNeedsReview) != (c.review != 0) {
				t.Fatalf("cart %s: state %v review %b", c.ID, c.State, c.review)
			}
		case subCheckout:
			co, err := decodeCheckout(v)
			if err != nil {
				t.Fatalf("checkout %x: %v", key, err)
			}
			if _, ok := st.m[string(dueKey(subRetain, co.purgeAtMs, key[2:]))]; !ok {
				t.Fatalf("checkout %s has no retention entry", co.ID)
			}
		case subIdem:
			rec, err := decodeIdem(v)
			if err != nil {
				t.Fatalf("idem %x: %v", key, err)
			}
			if _, ok := st.m[string(dueKey(subIdemExp, rec.expiresAtMs, key[2:]))]; !ok {
				t.Fatalf("idem %q has no expiry entry", key[2:])
			}
		case subIdle, subRetain:
			obj := map[byte]byte{subIdle: subCart, subRetain: subCheckout}[key[1]]
			if _, ok := st.m[string(append([]byte{Prefix, obj}, key[10:]...))]; !ok {
				t.Fatalf("index entry %x without object", key)
			}
		case subIdemExp:
			if _, ok := st.m[string(append([]byte{Prefix, subIdem}, key[10:]...))]; !ok {
				t.Fatalf("expiry entry %x without record", key)
			}
		}
	}
}

func binaryNum(b []byte) uint64 {
	var n uint64
	for _, c := range b[:8] {
		n = n<<8 | uint64(c)
	}
	return n
}

// decodeStored decodes a stored value by its key; it must never panic.
func decodeStored(key, v []byte) error {
	switch key[1] {
	case subCart:
		c, err := decodeCart(v)
		if err == nil {
			return roundTrip(appendCart(nil, c), v, func(b []byte) (any, error) { return decodeCart(b) }, c)
		}
		return err
	case subCheckout:
		co, err := decodeCheckout(v)
		if err == nil {
			return roundTrip(appendCheckout(nil, co), v, func(b []byte) (any, error) { return decodeCheckout(b) }, co)
		}
		return err
	case subIdem:
		rec, err := decodeIdem(v)
		if err == nil {
			return roundTrip(appendIdem(nil, rec), v, func(b []byte) (any, error) { return decodeIdem(b) }, rec)
		}
		return err
	case subMeta:
		loadMeta(&memStore{m: map[string][]byte{string(metaKey()): v}})
	}
	return nil
}

// roundTrip: what decodes re-encodes to something that decodes the same.
func roundTrip(enc, _ []byte, dec func([]byte) (any, error), want any) error {
	got, err := dec(enc)
	if err != nil {
		return fmt.Errorf("re-encoded value does not decode: %w", err)
	}
	if !reflect.DeepEqual(got, want) {
		return fmt.Errorf("round trip differs:\n%+v\n%+v", got, want)
	}
	return nil
}

// TestStoredValuesRobust decodes every stored value of a random run, and
// every truncation and many corruptions of it: no panic, and whatever
// decodes round-trips. Reads and commands against a corrupted store answer
// errors instead of panicking.
func TestStoredValuesRobust(t *testing.T) {
	st, _ := randomRun(t, 7, 600, nil)
	keys := make([]string, 0, len(st.m))
	for k := range st.m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, k := range keys {
		key, v := []byte(k), st.m[k]
		if err := decodeStored(key, v); err != nil {
			t.Fatalf("%x: stored value: %v", key, err)
		}
		for i := range v {
			if err := decodeStored(key, v[:i]); err == nil && key[1] != subMeta && len(v) > 0 {
				t.Fatalf("%x: truncation %d/%d decodes", key, i, len(v))
			}
			mut := bytes.Clone(v)
			mut[i] ^= byte(1 + rng.IntN(255))
			if err := decodeStored(key, mut); err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%x: mutation: %v", key, err)
			}
		}
	}
	// Corrupt every record in place: reads and commands must not panic.
	for _, k := range keys {
		if v := st.m[k]; len(v) > 3 {
			st.m[k] = v[:len(v)/2]
		}
	}
	m := New(Config{})
	for n := uint64(1); n < 20; n++ {
		Get(st, FormatCartID(n))
		GetCheckout(st, formatID(checkoutIDPrefix, n))
		for _, c := range sampleCommands() {
			c.Cart, c.Checkout = FormatCartID(n), formatID(checkoutIDPrefix, n)
			m.Apply(st, newPools(), t0, &c)
		}
	}
	m.Tick(st, 1<<62)
}

// FuzzDecodeStored: decoding arbitrary bytes as any stored value never
// panics, and what decodes round-trips.
func FuzzDecodeStored(f *testing.F) {
	st, _ := randomRun(f, 3, 200, nil)
	for k, v := range st.m {
		f.Add([]byte(k)[1], v)
	}
	f.Fuzz(func(t *testing.T, sub byte, v []byte) {
		if err := decodeStored([]byte{Prefix, sub}, v); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatal(err)
		}
	})
}

func TestResultRoundTrip(t *testing.T) {
	h := newHarness(t, Config{})
	h.pools.put(pool("A", ""), 1, 0)
	account, anon := seedCarts(h)
	merge := h.ok(Command{Kind: KindMerge, Cart: account, Source: anon})
	c := h.create("user:5")
	cart := h.add(c, item("A", ""), 3)
	refusal := h.fail(Command{Kind: KindCheckout, Cart: c, ExpectedVersion: cart.Version}, allocator.SoldOut)
	conflict := h.fail(Command{Kind: KindCheckout, Cart: c, ExpectedVersion: 1}, allocator.VersionConflict)
	l := cart.Lines[0]
	lineConflict := h.fail(Command{Kind: KindSetQty, Cart: c, LineID: l.ID, Qty: 1, LineVersion: 99}, allocator.VersionConflict)
	h.ok(Command{Kind: KindSetQty, Cart: c, LineID: l.ID, Qty: 1, LineVersion: l.LineVersion})
	co := h.ok(Command{Kind: KindCheckout, Cart: c, ExpectedVersion: cart.Version + 1, Partial: true})
	for i, r := range []Result{merge, refusal, conflict, lineConflict, co, {Created: true}, {}} {
		rec := idemRecord{kind: KindMerge, cart: "c_1", hash: [HashLen]byte{7}, expiresAtMs: 99, result: r}
		got, err := decodeIdem(appendIdem(nil, &rec))
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if !reflect.DeepEqual(got, &rec) {
			t.Fatalf("%d: round trip\n got %+v\nwant %+v", i, got.result, rec.result)
		}
	}
}
