package api

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/holdfast/holdfast/allocator"
)

// refusals answers, on the leader, the reserve requests its applied state
// certainly refuses without a log entry (allocator.Machine.Precheck after
// a read barrier, so the answer is a linearizable read), and records them
// afterwards in batches (allocator.KindRefusals) so that every replica
// counts them in its pools' demand.
//
// Only requests without an Idempotency-Key take this path. A keyed answer
// must be remembered before it is given (the same key must get the same
// answer, and must block other requests under it), which is what the log
// does; a refusal nobody will look up again needs no such record. A lost
// batch (the leader fails before it commits) loses only demand counts.
type refusals struct {
	node    Node
	alloc   *allocator.Machine
	log     *slog.Logger
	timeout time.Duration

	mu       sync.Mutex
	queue    []allocator.Refusal
	inFlight int // taken by the flusher, not yet applied
	flushing bool
}

const (
	// maxOutstandingRefusals bounds refusals answered but not yet applied;
	// past it requests take the log path, which has its own back-pressure.
	maxOutstandingRefusals = 1 << 16
	// maxRefusalBatchBytes bounds one KindRefusals command's encoding.
	maxRefusalBatchBytes = 128 << 10
)

func newRefusals(node Node, alloc *allocator.Machine, log *slog.Logger, timeout time.Duration) *refusals {
	return &refusals{node: node, alloc: alloc, log: log, timeout: timeout}
}

// try answers c, a validated reserve command, if that needs no log entry:
// ok is false when c must go through the log. err is set when the read
// barrier ran out of time (the request's deadline is spent: answer 503
// rather than start a second wait through the log).
func (f *refusals) try(ctx context.Context, c *allocator.Command) (res allocator.Result, ok bool, err error) {
	if c.IdemKey != "" {
		return allocator.Result{}, false, nil
	}
	f.mu.Lock()
	full := len(f.queue)+f.inFlight >= maxOutstandingRefusals
	f.mu.Unlock()
	if full {
		return allocator.Result{}, false, nil
	}
	// A request the current state would grant goes straight to the log:
	// the read barrier below is only worth paying for a likely refusal.
	if _, fresh, ok := f.alloc.Precheck(c, f.node.NowMs()); !ok || !fresh {
		return allocator.Result{}, false, nil
	}
	if err := f.node.ReadBarrier(ctx); err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return allocator.Result{}, false, err
		}
		return allocator.Result{}, false, nil // not the leader, or closing: the log path says so
	}
	res, fresh, ok := f.alloc.Precheck(c, f.node.NowMs())
	if !ok || !fresh {
		return allocator.Result{}, false, nil
	}
	f.add(allocator.Refusal{Err: res.Err})
	return res, true, nil
}

func (f *refusals) add(r allocator.Refusal) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queue = append(f.queue, r)
	if !f.flushing {
		f.flushing = true
		go f.flush()
	}
}

// flush proposes the queue in batches, one at a time, until it is empty.
// One batch in flight is enough: refusals queue up while it commits, so
// batches grow with the load.
func (f *refusals) flush() {
	var buf []byte
	for {
		f.mu.Lock()
		n, size := 0, 0
		for n < len(f.queue) && n < allocator.MaxRefusals && size < maxRefusalBatchBytes {
			size += refusalSize(&f.queue[n])
			n++
		}
		if n == 0 {
			f.flushing = false
			f.queue = nil // drop the grown backing array
			f.mu.Unlock()
			return
		}
		batch := append([]allocator.Refusal(nil), f.queue[:n]...)
		f.queue = append(f.queue[:0], f.queue[n:]...)
		f.inFlight += n
		f.mu.Unlock()

		cmd := allocator.Command{Kind: allocator.KindRefusals, Refusals: batch}
		buf = cmd.AppendEncode(buf[:0])
		ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
		_, err := f.node.Propose(ctx, buf)
		cancel()
		if err != nil {
			// The answers stand; only their demand counts may be lost.
			f.log.Warn("refusals not recorded", "count", n, "err", err)
		}
		f.mu.Lock()
		f.inFlight -= n
		f.mu.Unlock()
	}
}

// refusalSize bounds the encoding of r.
func refusalSize(r *allocator.Refusal) int {
	n := 24 + len(r.IdemKey) + allocator.HashLen
	for _, l := range r.Err.Lines {
		n += 16 + len(l.Pool)
	}
	return n
}
