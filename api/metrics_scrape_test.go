package api

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast/holdfast/allocator"
)

// TestScrapesDoNotHoldOffApply: the allocator collector walks every pool
// under the allocator's read lock. With many pools and a flood of
// concurrent scrapes, the walks must not hold the lock most of the time
// (apply waits on it): they are shared, so together they hold it at most
// about 1/(1+scrapeDutyFactor) of the time.
func TestScrapesDoNotHoldOffApply(t *testing.T) {
	const pools = 100_000
	m := allocator.New(allocator.Config{})
	now := int64(1_800_000_000_000)
	cmds := make([]allocator.Command, 0, 1000)
	for i := 0; i < pools; i += cap(cmds) {
		cmds = cmds[:0]
		for j := i; j < i+cap(cmds); j++ {
			cmds = append(cmds, allocator.Command{Kind: allocator.KindPutPool, Pool: fmt.Sprintf("p%07d", j), Config: allocator.DefaultPoolConfig(10)})
		}
		m.Apply(now, cmds, nil)
	}
	c := &allocCollector{alloc: m}

	const scrapers, run = 8, 2 * time.Second
	stop := time.Now().Add(run)
	var wg sync.WaitGroup
	for range scrapers {
		wg.Go(func() {
			ch := make(chan prometheus.Metric, 64)
			go func() {
				for range ch {
				}
			}()
			for time.Now().Before(stop) {
				c.Collect(ch)
			}
			close(ch)
		})
	}
	// Meanwhile the state machine applies entries; record how long each
	// waits for the lock and runs.
	var applies []time.Duration
	adjust := []allocator.Command{{Kind: allocator.KindAdjustPool, Pool: "p0000000", Delta: 1}}
	for time.Now().Before(stop) {
		start := time.Now()
		m.Apply(now, adjust, nil)
		applies = append(applies, time.Since(start))
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	held := float64(c.readDur) / float64(run)
	slices.Sort(applies)
	p := func(q float64) time.Duration { return applies[int(q*float64(len(applies)-1))] }
	t.Logf("%d pools, %d scrapers for %v: %d walks of %v each on average, lock held %.0f%% of the time; %d applies: p50 %v, p99 %v, max %v",
		pools, scrapers, run, c.reads, c.readDur/time.Duration(max(c.reads, 1)), 100*held, len(applies), p(0.5), p(0.99), p(1))
	if held > 0.25 {
		t.Fatalf("scrapes held the allocator's read lock %.0f%% of the time", 100*held)
	}
	if p(0.5) > 5*time.Millisecond {
		t.Fatalf("median apply took %v while scrapes ran", p(0.5))
	}
}
