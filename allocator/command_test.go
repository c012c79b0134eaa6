package allocator

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

// sampleCommands has one command per Kind with every field of that Kind
// set (the generic flags too), plus edge values, with and without an
// idempotency key.
func sampleCommands() []Command {
	hash := [HashLen]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0xa, 0xb, 0xc, 0xd, 0xe, 0xff}
	base := []Command{
		{
			Kind: KindPutPool, Pool: "sku-1:red:s@x/loc.1", Partial: true, Wait: true,
			Config: PoolConfig{
				OnHand: MaxStock, PerBuyerLimit: 3, HoldTTLMs: 600_000, MaxHoldTTLMs: 900_000,
				MaxExtensions: 7, Mode: ModeDraw,
				Draw:     DrawConfig{OpensAtMs: -5, ClosesAtMs: math.MaxInt64, Seed: "seed:1"},
				Waitlist: WaitlistConfig{Enabled: true, OfferTTLMs: 120_000, WaitTTLMs: 3_600_000},
			},
		},
		{Kind: KindPutPool, Pool: strings.Repeat("p", MaxIDLen), Config: PoolConfig{OnHand: math.MinInt64, Draw: DrawConfig{Seed: strings.Repeat("s", MaxIDLen)}}},
		{Kind: KindAdjustPool, Pool: "a", Delta: -123_456_789, Partial: true},
		{Kind: KindAdjustPool, Pool: "a", Delta: math.MaxInt64},
		{
			Kind: KindReserve, Buyer: "u-1", TTLMs: 120_000, Partial: true, Wait: true,
			Lines: []LineRequest{{Pool: "a", Qty: 1}, {Pool: "b/c", Qty: MaxQty}, {Pool: "a", Qty: -1}},
		},
		{Kind: KindReserve, Buyer: "u", Lines: repeatLine(LineRequest{Pool: "x", Qty: 2}, MaxLines)},
		{Kind: KindConfirm, Reservation: 1, Wait: true},
		{Kind: KindConfirm, Reservation: math.MaxUint64},
		{Kind: KindRelease, Reservation: 0xdeadbeef, Partial: true},
		{Kind: KindExtend, Reservation: 42, TTLMs: 60_000, Partial: true, Wait: true},
		{Kind: KindExtend, Reservation: 1 << 63, TTLMs: math.MinInt64},
		{Kind: KindTick},
		{Kind: KindTick, Partial: true, Wait: true},
		{Kind: KindSetClock, Delta: 1_800_000_000_000},
		{Kind: KindRefusals, Refusals: []Refusal{
			{Err: &Error{Code: SoldOut, Message: refusalMessage(SoldOut), Lines: []LineView{{Pool: "a", Qty: 1, State: LineSoldOut}}}},
			{IdemKey: "k-1", ReqHash: hash, Err: &Error{Code: BuyerLimit, Message: refusalMessage(BuyerLimit),
				Lines: []LineView{{Pool: "a", Qty: MaxQty, State: LineAvailable}, {Pool: "b", Qty: 2, State: LineBuyerLimit}}}},
		}},
	}
	var out []Command
	for _, c := range base {
		out = append(out, c)
		if c.Kind == KindRefusals || c.Kind == KindSetClock {
			continue // neither takes a key: refusals carry their own
		}
		c.IdemKey, c.ReqHash = "idem:"+kindName(c.Kind), hash
		out = append(out, c)
	}
	long := base[4]
	long.IdemKey = strings.Repeat("k", MaxIDLen)
	return append(out, long)
}

func kindName(k Kind) string {
	return [...]string{"?", "put", "adjust", "reserve", "confirm", "release", "extend", "tick", "refusals", "setclock"}[k]
}

func TestCommandRoundTrip(t *testing.T) {
	kinds := map[Kind]bool{}
	for _, c := range sampleCommands() {
		kinds[c.Kind] = true
		enc := c.AppendEncode(nil)
		got, err := DecodeCommand(enc)
		if err != nil {
			t.Fatalf("%v: decode: %v", kindName(c.Kind), err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("%v: round trip\n got %+v\nwant %+v", kindName(c.Kind), got, c)
		}
		// AppendEncode appends; it does not overwrite.
		prefix := []byte("xyz")
		if enc2 := c.AppendEncode(prefix); !bytes.Equal(enc2[:3], prefix) || !bytes.Equal(enc2[3:], enc) {
			t.Fatalf("%v: AppendEncode did not append", kindName(c.Kind))
		}
		// The decoded command does not alias the input.
		for i := range enc {
			enc[i] = 0xff
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("%v: decoded command changed with its input", kindName(c.Kind))
		}
	}
	for k := KindPutPool; k <= KindSetClock; k++ {
		if !kinds[k] {
			t.Fatalf("no sample of kind %d", k)
		}
	}
}

// TestCommandKindNumbers pins the log format's kind numbers.
func TestCommandKindNumbers(t *testing.T) {
	want := map[Kind]byte{KindPutPool: 1, KindAdjustPool: 2, KindReserve: 3, KindConfirm: 4, KindRelease: 5, KindExtend: 6, KindTick: 7, KindRefusals: 8, KindSetClock: 9}
	for k, b := range want {
		if byte(k) != b {
			t.Errorf("kind %s = %d, want %d", kindName(k), k, b)
		}
		if enc := (&Command{Kind: k}).AppendEncode(nil); enc[0] != b {
			t.Errorf("kind %s encodes as %d", kindName(k), enc[0])
		}
	}
	if got := (&Command{Kind: KindConfirm, Reservation: 300}).AppendEncode(nil); !bytes.Equal(got, []byte{4, 0, 0xac, 0x02}) {
		t.Errorf("confirm r_12c encodes as %x", got)
	}
}

func TestDecodeCommandTruncated(t *testing.T) {
	for _, c := range sampleCommands() {
		enc := c.AppendEncode(nil)
		for n := range len(enc) {
			got, err := DecodeCommand(enc[:n:n])
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%v: %d of %d bytes: err %v, want ErrCorrupt", kindName(c.Kind), n, len(enc), err)
			}
			if !reflect.DeepEqual(got, Command{}) {
				t.Fatalf("%v: %d bytes: error with a non-zero command %+v", kindName(c.Kind), n, got)
			}
		}
		// One byte too many is corrupt too.
		if _, err := DecodeCommand(append(enc, 0)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%v: trailing byte: err %v, want ErrCorrupt", kindName(c.Kind), err)
		}
	}
}

func TestDecodeCommandRejects(t *testing.T) {
	key129 := string(append([]byte{129, 1}, strings.Repeat("k", 129)...))
	cases := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"kind 0", []byte{0, 0}},
		{"kind 8", []byte{8, 0}},
		{"kind 63", []byte{63, 0}},
		{"kind 255", []byte{255, 0}},
		{"unknown flag", []byte{byte(KindTick), 1 << 4}},
		{"all flags", []byte{byte(KindTick), 0xff}},
		{"empty idempotency key", append([]byte{byte(KindTick), flagIdem, 0}, make([]byte, HashLen)...)},
		{"idempotency key of 129 bytes", append(append([]byte{byte(KindTick), flagIdem}, key129...), make([]byte, HashLen)...)},
		{"short hash", append([]byte{byte(KindTick), flagIdem, 1, 'k'}, make([]byte, HashLen-1)...)},
		{"pool id of 129 bytes", append([]byte{byte(KindAdjustPool), 0}, append([]byte(key129), 2)...)},
		{"string longer than input", []byte{byte(KindAdjustPool), 0, 5, 'a', 2}},
		{"101 lines", []byte{byte(KindReserve), 0, 1, 'u', 0, 101}},
		{"huge line count", []byte{byte(KindReserve), 0, 1, 'u', 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{"varint overflow", []byte{byte(KindConfirm), 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}},
		{"varint of 11 bytes", []byte{byte(KindConfirm), 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}},
		{"lines missing", []byte{byte(KindReserve), 0, 1, 'u', 0, 2, 1, 'a', 2}},
		{"tick with a payload", []byte{byte(KindTick), 0, 0}},
	}
	for _, tc := range cases {
		got, err := DecodeCommand(tc.b)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err %v, want ErrCorrupt", tc.name, err)
		}
		if !reflect.DeepEqual(got, Command{}) {
			t.Errorf("%s: error with a non-zero command %+v", tc.name, got)
		}
	}
}

// checkDecode is the fuzz property: any input either is corrupt or decodes
// to a command whose encoding decodes to the same command.
func checkDecode(t *testing.T, data []byte) {
	in := bytes.Clone(data)
	c, err := DecodeCommand(data)
	if !bytes.Equal(in, data) {
		t.Fatalf("DecodeCommand modified its input")
	}
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error %v does not wrap ErrCorrupt", err)
		}
		if !reflect.DeepEqual(c, Command{}) {
			t.Fatalf("error with a non-zero command %+v", c)
		}
		return
	}
	if c.Kind < KindPutPool || c.Kind > KindSetClock {
		t.Fatalf("decoded unknown kind %d", c.Kind)
	}
	if len(c.IdemKey) > MaxIDLen || len(c.Pool) > MaxIDLen || len(c.Buyer) > MaxIDLen || len(c.Lines) > MaxLines {
		t.Fatalf("decoded oversized fields: %+v", c)
	}
	enc := c.AppendEncode(nil)
	c2, err := DecodeCommand(enc)
	if err != nil {
		t.Fatalf("re-encoding of %+v does not decode: %v", c, err)
	}
	if !reflect.DeepEqual(c, c2) {
		t.Fatalf("re-encoding changed the command:\n first %+v\nsecond %+v", c, c2)
	}
	if enc2 := c2.AppendEncode(nil); !bytes.Equal(enc, enc2) {
		t.Fatalf("encoding is not stable: %x vs %x", enc, enc2)
	}
}

// FuzzDecodeCommand: seeds are in testdata/fuzz/FuzzDecodeCommand plus the
// sample commands.
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range sampleCommands() {
		f.Add(c.AppendEncode(nil))
	}
	f.Fuzz(checkDecode)
}

// snapshotSeed is a snapshot with pools, reservations in every state, buyer
// usage and idempotency records of every result shape.
func snapshotSeed(tb testing.TB) []byte {
	m := New(Config{MaxClockStepMs: 1 << 40})
	apply := func(now int64, cmds ...Command) []Result { return m.Apply(now, cmds, nil) }
	apply(t0,
		putCmd("a", limited(poolCfg(20, 1000, 5000, 2), 5)),
		putCmd("b/c", DefaultPoolConfig(3)),
		idem(putCmd("d", DefaultPoolConfig(1)), "put", 1),
	)
	res := apply(t0+10,
		reserveCmd("u1", ln("a", 2), ln("b/c", 1)),
		idem(reserveCmd("u2", ln("a", 1)), "res", 2),
		idem(partial(reserveCmd("u3", ln("a", 1), ln("b/c", 9))), "part", 3),
		idem(reserveCmd("u4", ln("b/c", 9)), "refused", 4),
		reserveCmd("u5", ln("a", 3)),
		reserveCmd("u6", ln("d", 1)),
	)
	r1, r2, r3 := res[0].Reservation.ID, res[1].Reservation.ID, res[2].Reservation.ID
	apply(t0+20,
		idem(confirmCmd(r1), "conf", 5),
		releaseCmd(r2),
		idem(extendCmd(r3, 2000), "ext", 6),
		idem(adjustCmd("a", 4), "adj", 7),
	)
	apply(t0 + 1500) // u5's hold expires
	snap := m.Snapshot()
	if m.Stats().IdempotencyKeys == 0 || m.res.len() < 5 {
		tb.Fatalf("seed snapshot too thin")
	}
	return snap
}

// TestSnapshotTruncated: every truncation of a real snapshot is refused and
// leaves the machine as it was.
func TestSnapshotTruncated(t *testing.T) {
	snap := snapshotSeed(t)
	m := New(Config{})
	if err := m.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.Snapshot(), snap) {
		t.Fatalf("restore of a snapshot is not identical")
	}
	want := m.StateHash()
	for n := range len(snap) {
		if err := m.Restore(bytes.NewReader(snap[:n])); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%d of %d bytes: err %v, want ErrCorrupt", n, len(snap), err)
		}
		if m.StateHash() != want {
			t.Fatalf("%d bytes: a failed Restore changed the state", n)
		}
	}
}

// FuzzRestore: Restore on arbitrary bytes never panics; what it accepts is
// a state whose snapshot restores to itself.
func FuzzRestore(f *testing.F) {
	snap := snapshotSeed(f)
	f.Add(snap)
	f.Add(New(Config{}).Snapshot())
	// Small states mutate into deeper inputs than the big seed.
	small := New(Config{})
	small.Apply(t0, []Command{putCmd("a", DefaultPoolConfig(2)), reserveCmd("u", ln("a", 1))}, nil)
	f.Add(small.Snapshot())
	small.Apply(t0+1, []Command{idem(confirmCmd(1), "k", 1)}, nil)
	f.Add(small.Snapshot())
	f.Add([]byte{})
	f.Add([]byte{snapshotVersion})
	f.Fuzz(func(t *testing.T, data []byte) {
		m := New(Config{})
		if err := m.Restore(bytes.NewReader(data)); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			if m.StateHash() != New(Config{}).StateHash() {
				t.Fatalf("a failed Restore changed the state")
			}
			return
		}
		s1 := m.Snapshot()
		m2 := New(Config{})
		if err := m2.Restore(bytes.NewReader(s1)); err != nil {
			t.Fatalf("snapshot of a restored state does not restore: %v", err)
		}
		if s2 := m2.Snapshot(); !bytes.Equal(s1, s2) {
			t.Fatalf("snapshot is not a fixed point:\n%x\n%x", s1, s2)
		}
		// What Restore accepts, Apply and Snapshot must survive.
		runPastDeadlines(m)
	})
}

// runPastDeadlines applies entries that move the clock past the deadlines
// of a restored machine, snapshotting along the way.
func runPastDeadlines(m *Machine) {
	now := m.ClockMs()
	for _, step := range []int64{1, 10, 100, 500, 1000, 60_000, 3_600_000, 48 * 3_600_000, 1 << 40} {
		if now > math.MaxInt64-step {
			break
		}
		now += step
		for range 3 {
			m.Apply(now, []Command{{Kind: KindTick}}, nil)
			m.Snapshot()
		}
	}
}

// TestRestoreRejectsInconsistentSnapshots: Restore must refuse a snapshot
// that would make a later Apply or Snapshot panic (or the machine must cope
// with it). Each case is a snapshot Restore accepts today.
func TestRestoreRejectsInconsistentSnapshots(t *testing.T) {
	cfg := Config{MaxClockStepMs: 1 << 40, IdempotencyTTLMs: 1000}
	cases := []struct {
		name string
		snap func() []byte
	}{
		{
			// Wheel keys are id<<1: the top bit of an id >= 2^63 is lost, so
			// at its deadline advance() looks up id-2^63 and panics.
			name: "reservation id >= 2^63",
			snap: func() []byte {
				m := New(cfg)
				m.Apply(t0, []Command{putCmd("a", poolCfg(10, 1000, 5000, 1))}, nil)
				m.nextID = 1 << 63
				m.Apply(t0, []Command{reserveCmd("u", ln("a", 1))}, nil)
				return m.Snapshot()
			},
		},
		{
			// Same for idempotency sequence numbers: forgetIdem panics.
			name: "idempotency seq >= 2^63",
			snap: func() []byte {
				m := New(cfg)
				m.Apply(t0, []Command{putCmd("a", DefaultPoolConfig(10))}, nil)
				m.idemSeq = 1 << 63
				m.Apply(t0, []Command{idem(adjustCmd("a", 1), "k", 1)}, nil)
				return m.Snapshot()
			},
		},
		{
			// One key under two sequence numbers: forgetting the first deletes
			// the record of the second, and Snapshot then dereferences nil.
			name: "duplicate idempotency key",
			snap: func() []byte {
				m := New(cfg)
				m.Apply(t0, []Command{putCmd("a", DefaultPoolConfig(10)), idem(adjustCmd("a", 1), "k1", 1)}, nil)
				m.Apply(t0+500, []Command{idem(adjustCmd("a", 1), "k2", 2)}, nil)
				return bytes.Replace(m.Snapshot(), []byte("\x02k2"), []byte("\x02k1"), 1)
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := New(cfg)
			if err := m.Restore(bytes.NewReader(tc.snap())); err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("error %v does not wrap ErrCorrupt", err)
				}
				return // refused: fine
			}
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("Restore accepted the snapshot, then the machine panicked: %v", p)
				}
			}()
			runPastDeadlines(m)
		})
	}
}
