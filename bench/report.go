package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Report is a bench run: one scenario against one or more targets.
type Report struct {
	Scenario string            `json:"scenario"`
	Started  time.Time         `json:"started"`
	Settings map[string]string `json:"settings"`
	Targets  []*TargetReport   `json:"targets"`
}

// TargetReport is the result of the scenario against one target.
type TargetReport struct {
	Target  string `json:"target"`
	URL     string `json:"url"`
	Skipped string `json:"skipped,omitempty"`
	Error   string `json:"error,omitempty"`
	Mode    string `json:"mode,omitempty"`
	// SetupS is how long creating the pools took; ElapsedS the load phase
	// (arrivals and drain), the window throughput is computed over.
	SetupS   float64 `json:"setup_s"`
	ElapsedS float64 `json:"elapsed_s"`
	// Sessions started; NotStarted were due before the arrival window
	// closed but never started (the target or the harness fell behind, or
	// --duration was too short); Dropped are continuations (confirms,
	// polls) still pending at the hard end.
	Sessions   int64 `json:"sessions"`
	NotStarted int64 `json:"not_started"`
	Dropped    int64 `json:"dropped"`

	// PeakPerSec is the most operations that ended in one whole second.
	PeakPerSec         float64        `json:"peak_per_s"`
	Ops                []OpReport     `json:"ops"`
	Total              OpReport       `json:"total"`
	Series             []SeriesPoint  `json:"series"`
	Checks             []Check        `json:"checks"`
	Fairness           *Fairness      `json:"fairness,omitempty"`
	ExpiryLag          *ExpiryLag     `json:"expiry_lag,omitempty"`
	LateDisappointment *Disappointing `json:"late_disappointment,omitempty"`
	Counters           []Counter      `json:"counters,omitempty"`
	// FindMax is the max-load ramp (--find-max); the rest of the report
	// is then the measured run at its share of the max.
	FindMax *FindMax `json:"find_max,omitempty"`
	// Routing is how a holdfast target's writes and linearizable reads
	// went: through a follower or straight to the leader.
	Routing *RouteStats `json:"routing,omitempty"`
	Notes   []string    `json:"notes,omitempty"`
}

// FindMax is a target's max-load search (see runFindMax).
type FindMax struct {
	Method     string     `json:"method"`
	StepS      float64    `json:"step_s"`
	WarmupS    float64    `json:"warmup_s"`
	P99BoundMs float64    `json:"p99_bound_ms"`
	Growth     float64    `json:"min_growth"`
	Patience   int        `json:"patience"`
	Share      float64    `json:"share"`
	Steps      []RampStep `json:"steps"`
	// MaxPerSec is the best throughput of the steps within the bound, at
	// AtInFlight requests in flight.
	MaxPerSec  float64 `json:"max_per_s"`
	AtInFlight int     `json:"at_in_flight"`
	Stopped    string  `json:"stopped"`
	Note       string  `json:"note,omitempty"`
	// Rate is the measured run's offered load: Share x MaxPerSec.
	Rate float64 `json:"measured_rate"`
}

// RampStep is one step of the ramp, measured after its warm-up.
type RampStep struct {
	InFlight int     `json:"in_flight"`
	Ops      int64   `json:"ops"`
	Failed   int64   `json:"failed"`
	PerSec   float64 `json:"per_s"`
	P50      float64 `json:"p50_ms"`
	P99      float64 `json:"p99_ms"`
	P999     float64 `json:"p999_ms"`
	SetupS   float64 `json:"setup_s"`
	// Checks summarises the step's ledger checks.
	Checks string `json:"checks"`
	// Over: p99 over the bound or too many failures.
	Over bool `json:"over"`
	// ForwardedShare is the share of writes a follower forwarded
	// (holdfast).
	ForwardedShare *float64 `json:"forwarded_share,omitempty"`
	// OutOfSessionsS: the scenario ran out of sessions this many seconds
	// into the step; it was measured until then.
	OutOfSessionsS float64 `json:"out_of_sessions_s,omitempty"`
}

// OpReport is one operation's throughput (over WindowS, the time from its
// first to its last completion), latency (ms, from the scheduled start)
// and outcomes.
type OpReport struct {
	Op         string           `json:"op"`
	Count      int64            `json:"count"`
	WindowS    float64          `json:"window_s"`
	PerSec     float64          `json:"per_s"`
	P50        float64          `json:"p50_ms"`
	P90        float64          `json:"p90_ms"`
	P99        float64          `json:"p99_ms"`
	P999       float64          `json:"p999_ms"`
	Max        float64          `json:"max_ms"`
	Outcomes   map[string]int64 `json:"outcomes"`
	FirstError string           `json:"first_error,omitempty"`
}

// SeriesPoint is one second of the run: operations that ended in it and
// their p99.
type SeriesPoint struct {
	T      float64 `json:"t_s"`
	Ops    int64   `json:"ops"`
	PerSec float64 `json:"per_s"`
	P99    float64 `json:"p99_ms"`
}

// Check is one correctness check against the target's final state.
type Check struct {
	Name   string `json:"name"`
	Status string `json:"status"` // ok, FAIL, n/a, info
	Value  int64  `json:"value"`
	Of     int64  `json:"of,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// Counter is a named scenario count.
type Counter struct {
	Name  string `json:"name"`
	Value int64  `json:"value"`
}

// Fairness is how evenly the scarce units went around.
type Fairness struct {
	Method string `json:"method"`
	// Buyers are distinct buyers who asked; Units what they were granted
	// (holds and waitlist offers, whether confirmed or not).
	Buyers int64 `json:"buyers"`
	Units  int64 `json:"units"`
	// Jain's index of units per distinct buyer, and the best possible
	// value with this many units for this many buyers at one unit each.
	Jain      float64 `json:"jain"`
	JainIdeal float64 `json:"jain_ideal"`
	// QueueJumps: fresh requests granted although they were sent after a
	// request had been acknowledged as waiting (-1: not measurable).
	QueueJumps int64  `json:"queue_jumps"`
	JumpNote   string `json:"queue_jump_note,omitempty"`
	// Draws: win rate of entrants by entry-time decile (first tenth of
	// entries first).
	DecileWinRate []float64 `json:"decile_win_rate,omitempty"`
	Entrants      int64     `json:"entrants,omitempty"`
	Winners       int64     `json:"winners,omitempty"`
}

// ExpiryLag is the time from a hold's expires_at until its units were
// available again, measured with probe holds (see expiryProbes).
type ExpiryLag struct {
	Method     string  `json:"method"`
	ProbeTTLMs int64   `json:"probe_ttl_ms"`
	Samples    int64   `json:"samples"`
	P50        float64 `json:"p50_ms"`
	P90        float64 `json:"p90_ms"`
	P99        float64 `json:"p99_ms"`
	Max        float64 `json:"max_ms"`
	NotBack    int64   `json:"not_back"`
	Failed     int64   `json:"failed"`
}

// Disappointing is the late-disappointment measure: attempts (checkout
// starts, or reserve attempts in a drop) that failed for stock on a pool
// a cart read had shown as in stock within the previous 30 s.
type Disappointing struct {
	Attempts       int64   `json:"attempts"`
	FailedForStock int64   `json:"failed_for_stock"`
	Disappointed   int64   `json:"disappointed"`
	Share          float64 `json:"share"`
}

func (d *Disappointing) finish() *Disappointing {
	if d.Attempts > 0 {
		d.Share = float64(d.Disappointed) / float64(d.Attempts)
	}
	return d
}

// failed says whether any check failed.
func (r *Report) failed() bool {
	for _, t := range r.Targets {
		if t.Error != "" {
			return true
		}
		for _, c := range t.Checks {
			if c.Status == statusFail {
				return true
			}
		}
	}
	return false
}

// WriteTable renders the report for people.
func (r *Report) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "holdfast bench %s, %s\n", r.Scenario, r.Started.Format(time.RFC3339))
	var keys []string
	for k := range r.Settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var kv []string
	for _, k := range keys {
		kv = append(kv, k+"="+r.Settings[k])
	}
	fmt.Fprintf(w, "settings: %s\n", strings.Join(kv, " "))
	for _, t := range r.Targets {
		fmt.Fprintf(w, "\n== %s  %s\n", t.Target, t.URL)
		if t.Skipped != "" {
			fmt.Fprintf(w, "skipped: %s\n", t.Skipped)
			continue
		}
		if t.Error != "" {
			fmt.Fprintf(w, "error: %s\n", t.Error)
		}
		if fm := t.FindMax; fm != nil {
			writeFindMax(w, fm)
			if len(t.Ops) > 0 {
				fmt.Fprintf(w, "measured run at %.0f%% of the max:\n", 100*fm.Share)
			}
		}
		if len(t.Ops) == 0 {
			for _, c := range t.Checks {
				fmt.Fprintf(w, "  %s  %s  %d / %d  %s\n", c.Status, c.Name, c.Value, c.Of, c.Detail)
			}
			continue
		}
		fmt.Fprintf(w, "%s; setup %.1fs, load %.1fs; sessions %d, not started %d, continuations dropped at the end %d\n",
			t.Mode, t.SetupS, t.ElapsedS, t.Sessions, t.NotStarted, t.Dropped)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "op\tcount\tops/s\tp50 ms\tp90 ms\tp99 ms\tp99.9 ms\tmax ms\t outcomes\t")
		for _, o := range append(append([]OpReport(nil), t.Ops...), t.Total) {
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t %s\t\n", o.Op, o.Count, o.PerSec, o.P50, o.P90, o.P99, o.P999, o.Max, outcomesText(o.Outcomes))
		}
		tw.Flush()
		for _, o := range t.Ops {
			if o.FirstError != "" {
				fmt.Fprintf(w, "first error of %s: %s\n", o.Op, o.FirstError)
			}
		}
		if len(t.Checks) > 0 {
			fmt.Fprintln(w, "ledger checks:")
			tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			for _, c := range t.Checks {
				val := fmt.Sprint(c.Value)
				if c.Status == statusNA {
					val = "-"
				} else if c.Of > 0 {
					val += " / " + fmt.Sprint(c.Of)
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", c.Status, c.Name, val, c.Detail)
			}
			tw.Flush()
		}
		if f := t.Fairness; f != nil {
			fmt.Fprintf(w, "fairness (%s): %d distinct buyers, %d units granted, Jain's index %.4f (best possible %.4f)",
				f.Method, f.Buyers, f.Units, f.Jain, f.JainIdeal)
			if f.QueueJumps >= 0 {
				fmt.Fprintf(w, ", queue jumps %d", f.QueueJumps)
			} else {
				fmt.Fprintf(w, ", queue jumps n/a")
			}
			if f.JumpNote != "" {
				fmt.Fprintf(w, " (%s)", f.JumpNote)
			}
			fmt.Fprintln(w)
			if len(f.DecileWinRate) > 0 {
				var ds []string
				for _, d := range f.DecileWinRate {
					ds = append(ds, fmt.Sprintf("%.3f", d))
				}
				fmt.Fprintf(w, "draw: %d entrants, %d winners; win rate by entry-time decile: %s\n", f.Entrants, f.Winners, strings.Join(ds, " "))
			}
		}
		if e := t.ExpiryLag; e != nil {
			if e.Samples > 0 {
				fmt.Fprintf(w, "expiry lag (%s, TTL %d ms): %d samples, p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms; not back within 10 s: %d\n",
					e.Method, e.ProbeTTLMs, e.Samples, e.P50, e.P90, e.P99, e.Max, e.NotBack)
			} else {
				fmt.Fprintf(w, "expiry lag: no samples (%s; not back %d, probe reserves failed %d)\n", e.Method, e.NotBack, e.Failed)
			}
		}
		if d := t.LateDisappointment; d != nil {
			fmt.Fprintf(w, "late disappointment: %d of %d attempts (%.2f%%) failed for stock after a cart read showed the pool in stock within 30 s; %d failed for stock in all\n",
				d.Disappointed, d.Attempts, 100*d.Share, d.FailedForStock)
		}
		if len(t.Counters) > 0 {
			var cs []string
			for _, c := range t.Counters {
				cs = append(cs, fmt.Sprintf("%s=%d", c.Name, c.Value))
			}
			fmt.Fprintf(w, "counts: %s\n", strings.Join(cs, " "))
		}
		for _, n := range t.Notes {
			fmt.Fprintf(w, "note: %s\n", n)
		}
	}
	if len(r.Targets) > 1 {
		if r.findMax() {
			r.writeFindMaxSummary(w)
		} else {
			r.writeSummary(w)
		}
	}
}

func (r *Report) findMax() bool {
	for _, t := range r.Targets {
		if t.FindMax != nil {
			return true
		}
	}
	return false
}

// writeSummary is one line per target: the ratio column compares each
// target with the first holdfast target of the run (same run, same
// machine): holdfast's peak ops/s divided by the target's.
func (r *Report) writeSummary(w io.Writer) {
	fmt.Fprintln(w, "\nsummary (all operations):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	var ref float64
	for _, t := range r.Targets {
		if strings.HasPrefix(t.Target, "holdfast") && t.PeakPerSec > 0 && ref == 0 {
			ref = t.PeakPerSec
		}
	}
	fmt.Fprintln(tw, "target\tops\tops/s\tpeak ops/s\tholdfast x\tp50 ms\tp99 ms\tp99.9 ms\tmax ms\tfailed\tchecks\t")
	for _, t := range r.Targets {
		if t.Skipped != "" || len(t.Ops) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t%s\t\n", t.Target, firstNonEmpty(t.Skipped, t.Error, "-"))
			continue
		}
		ratio := "-"
		if ref > 0 && t.PeakPerSec > 0 {
			ratio = fmt.Sprintf("%.2f", ref/t.PeakPerSec)
		}
		o := t.Total
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%s\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t%s\t\n", t.Target, o.Count, o.PerSec, t.PeakPerSec, ratio, o.P50, o.P99, o.P999, o.Max, o.Outcomes["failed"], checksText(t.Checks))
	}
	tw.Flush()
}

// writeFindMaxSummary is the --find-max summary: each target's max
// sustainable throughput (closed-loop ramp), holdfast's max divided by the
// target's ("holdfast x max", against the first holdfast target of the
// run), and the offered load and latency of the measured open-loop run at
// the share of the target's own max (all operations, from the scheduled
// start; its achieved ops/s are in the target's own section: sessions
// with think times spread their operations past the arrival window).
func (r *Report) writeFindMaxSummary(w io.Writer) {
	share := 0.5
	var ref float64
	for _, t := range r.Targets {
		if fm := t.FindMax; fm != nil {
			share = fm.Share
			if strings.HasPrefix(t.Target, "holdfast") && fm.MaxPerSec > 0 && ref == 0 {
				ref = fm.MaxPerSec
			}
		}
	}
	at := fmt.Sprintf("@%.0f%%", 100*share)
	fmt.Fprintf(w, "\nsummary (max: closed-loop ramp; %s: open loop at that share of each target's own max, all operations):\n", at)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "target\tmax ops/s\tin flight\tholdfast x max\toffered %[1]s\tp50 %[1]s\tp99 %[1]s\tp99.9 %[1]s\tfailed\tchecks\t\n", at)
	for _, t := range r.Targets {
		fm := t.FindMax
		if t.Skipped != "" || fm == nil {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\t-\t%s\t\n", t.Target, firstNonEmpty(t.Skipped, t.Error, "-"))
			continue
		}
		ratio := "-"
		if ref > 0 && fm.MaxPerSec > 0 {
			ratio = fmt.Sprintf("%.2f", ref/fm.MaxPerSec)
		}
		if len(t.Ops) == 0 {
			fmt.Fprintf(tw, "%s\t%.0f\t%d\t%s\t-\t-\t-\t-\t-\t%s\t\n", t.Target, fm.MaxPerSec, fm.AtInFlight, ratio, firstNonEmpty(t.Error, checksText(t.Checks)))
			continue
		}
		o := t.Total
		fmt.Fprintf(tw, "%s\t%.0f\t%d\t%s\t%.0f\t%.2f ms\t%.2f ms\t%.2f ms\t%d\t%s\t\n", t.Target, fm.MaxPerSec, fm.AtInFlight, ratio,
			fm.Rate, o.P50, o.P99, o.P999, o.Outcomes["failed"], checksText(t.Checks))
	}
	tw.Flush()
}

// writeFindMax renders a target's ramp.
func writeFindMax(w io.Writer, fm *FindMax) {
	fmt.Fprintf(w, "find-max (%s; %.1fs steps, the first %.1fs not measured; p99 bound %.0f ms):\n", fm.Method, fm.StepS, fm.WarmupS, fm.P99BoundMs)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "in flight\tops\tops/s\tp50 ms\tp99 ms\tp99.9 ms\tfailed\tforwarded\tsetup s\t ledger\t")
	for _, st := range fm.Steps {
		fwd := "-"
		if st.ForwardedShare != nil {
			fwd = fmt.Sprintf("%.1f%%", 100**st.ForwardedShare)
		}
		mark := ""
		if st.OutOfSessionsS > 0 {
			mark += fmt.Sprintf(" (out of sessions at %.1fs)", st.OutOfSessionsS)
		}
		if st.Over {
			mark += " (over)"
		}
		fmt.Fprintf(tw, "%d\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%d\t%s\t%.1f\t %s%s\t\n", st.InFlight, st.Ops, st.PerSec, st.P50, st.P99, st.P999, st.Failed, fwd, st.SetupS, st.Checks, mark)
	}
	tw.Flush()
	fmt.Fprintf(w, "max %.0f ops/s at %d in flight; stopped: %s", fm.MaxPerSec, fm.AtInFlight, fm.Stopped)
	if fm.Note != "" {
		fmt.Fprintf(w, "; %s", fm.Note)
	}
	fmt.Fprintf(w, "; measured run offered %.0f req/s (%.0f%%)\n", fm.Rate, 100*fm.Share)
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

func checksText(cs []Check) string {
	ok, fail, na := 0, 0, 0
	for _, c := range cs {
		switch c.Status {
		case statusOK:
			ok++
		case statusFail:
			fail++
		case statusNA:
			na++
		}
	}
	if fail > 0 {
		return fmt.Sprintf("%d FAILED", fail)
	}
	if ok == 0 {
		return "n/a"
	}
	s := fmt.Sprintf("%d ok", ok)
	if na > 0 {
		s += fmt.Sprintf(", %d n/a", na)
	}
	return s
}

func outcomesText(m map[string]int64) string {
	var parts []string
	for i := range NumOutcomes {
		n := Outcome(i).String()
		if c := m[n]; c > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", n, c))
		}
	}
	return strings.Join(parts, " ")
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// WritePlot draws throughput and p99 latency per second, one line per
// target, to an .svg or .png file.
func (r *Report) WritePlot(path string) error {
	ext := strings.ToLower(filepath.Ext(path))
	if ext != ".svg" && ext != ".png" {
		return fmt.Errorf("--plot %s: want a .svg or .png file", path)
	}
	tp := plot.New()
	tp.Title.Text = "holdfast bench " + r.Scenario + ": throughput"
	tp.X.Label.Text = "s"
	tp.Y.Label.Text = "ops/s"
	lp := plot.New()
	lp.Title.Text = "p99 latency (from scheduled start)"
	lp.X.Label.Text = "s"
	lp.Y.Label.Text = "ms"
	for _, p := range []*plot.Plot{tp, lp} {
		p.Add(plotter.NewGrid())
		p.Legend.Top = true
		p.Y.Min = 0
	}
	for i, t := range r.Targets {
		if len(t.Series) == 0 {
			continue
		}
		thr := make(plotter.XYs, len(t.Series))
		lat := make(plotter.XYs, 0, len(t.Series))
		for j, s := range t.Series {
			thr[j] = plotter.XY{X: s.T, Y: s.PerSec}
			if s.Ops > 0 {
				lat = append(lat, plotter.XY{X: s.T, Y: s.P99})
			}
		}
		for _, pl := range []struct {
			p   *plot.Plot
			xys plotter.XYs
		}{{tp, thr}, {lp, lat}} {
			if len(pl.xys) == 0 {
				continue
			}
			l, err := plotter.NewLine(pl.xys)
			if err != nil {
				return err
			}
			l.Color = plotutil.Color(i)
			l.Width = vg.Points(1.5)
			pl.p.Add(l)
			pl.p.Legend.Add(t.Target, l)
		}
	}
	const w, h = 22 * vg.Centimeter, 20 * vg.Centimeter
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadX: vg.Millimeter, PadY: 4 * vg.Millimeter,
		PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 4 * vg.Millimeter}
	var canvas interface {
		vg.CanvasSizer
		io.WriterTo
	}
	if ext == ".svg" {
		canvas = vgsvg.New(w, h)
	} else {
		canvas = vgimg.PngCanvas{Canvas: vgimg.New(w, h)}
	}
	dc := draw.New(canvas)
	plots := [][]*plot.Plot{{tp}, {lp}}
	cs := plot.Align(plots, tiles, dc)
	tp.Draw(cs[0][0])
	lp.Draw(cs[1][0])
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := canvas.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
