package logstore

import (
	"fmt"
	"sync/atomic"
)

// constError is an error that can be declared const, so the sentinels below
// are not package-level mutable state and compare equal by value.
type constError string

func (e constError) Error() string { return string(e) }

const (
	// ErrNotFound is returned by Store.Get and Store.GetUint64 for a missing
	// key. Its text must be exactly "not found": hashicorp/raft (NewRaft,
	// HasExistingState, vote handling) compares err.Error() with that string
	// and treats any other error as fatal on a fresh node.
	ErrNotFound = constError("not found")

	// ErrClosed is returned by every operation after DB.Close. (Pebble itself
	// panics when used after Close.)
	ErrClosed = constError("logstore: closed")

	// ErrFailed is matched (errors.Is) by the latched error that DB.Err and
	// every refused write return after a storage failure.
	ErrFailed = constError("logstore: storage failed, writes refused")

	// ErrCorrupt is wrapped by errors for undecodable log values and keys
	// that violate the key layout.
	ErrCorrupt = constError("logstore: corrupt data")
)

// failedError is the latched error: it says why the store stopped accepting
// writes, matches ErrFailed and unwraps to the first cause (for example an
// injected or real fsync error).
type failedError struct {
	cause error
}

func (e *failedError) Error() string {
	return fmt.Sprintf("%s: %v", ErrFailed, e.cause)
}

func (e *failedError) Unwrap() error { return e.cause }

func (e *failedError) Is(target error) bool { return target == ErrFailed }

// fatalError carries a message Pebble passed to Logger.Fatalf; it unwraps to
// the first error among the arguments so errors.Is still sees the I/O error.
type fatalError struct {
	msg   string
	cause error
}

func (e *fatalError) Error() string { return "pebble fatal: " + e.msg }

func (e *fatalError) Unwrap() error { return e.cause }

func newFatalError(format string, args ...any) error {
	e := &fatalError{msg: fmt.Sprintf(format, args...)}
	for _, a := range args {
		if err, ok := a.(error); ok {
			e.cause = err
			break
		}
	}
	return e
}

// latch records the first storage failure. After it is set nothing is
// written again through this package: once an fsync has failed, the kernel
// may have dropped the dirty pages and a later fsync can report success for
// data that never reached the disk, so "retry" would acknowledge lost writes.
type latch struct {
	err    atomic.Pointer[failedError]
	failed chan struct{} // closed when err is first set
}

func newLatch() *latch {
	return &latch{failed: make(chan struct{})}
}

// set latches cause if nothing is latched yet and returns the latched error
// (the first one, which may not be cause).
func (l *latch) set(cause error) error {
	fe := &failedError{cause: cause}
	if l.err.CompareAndSwap(nil, fe) {
		close(l.failed)
		return fe
	}
	return l.err.Load()
}

// get returns the latched error or nil. It returns a plain nil interface
// when nothing is latched (not a typed nil pointer).
func (l *latch) get() error {
	if fe := l.err.Load(); fe != nil {
		return fe
	}
	return nil
}
