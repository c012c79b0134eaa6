package logstore

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// latchFS wraps the filesystem Pebble uses so that the first failed write or
// sync of any file (WAL, sstable, MANIFEST, directory) latches the DB
// failed on the goroutine that saw the error, before Pebble propagates it.
// This does not rely on how Pebble reports the error (for the WAL it calls
// Logger.Fatalf and lets Apply return nil; for a WAL close during rotation
// it panics), and it latches before the batches waiting on that sync are
// released, so their commit check already sees it.
type latchFS struct {
	vfs.FS
	latch *latch
}

func (fs *latchFS) wrap(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return &latchFile{File: f, latch: fs.latch}, nil
}

// Create wraps the created file.
func (fs *latchFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	return fs.wrap(fs.FS.Create(name, category))
}

// OpenReadWrite wraps the opened file.
func (fs *latchFS) OpenReadWrite(name string, category vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	return fs.wrap(fs.FS.OpenReadWrite(name, category, opts...))
}

// OpenDir wraps the directory handle, whose Sync makes renames and new files
// durable.
func (fs *latchFS) OpenDir(name string) (vfs.File, error) {
	return fs.wrap(fs.FS.OpenDir(name))
}

// ReuseForWrite wraps the recycled (WAL) file.
func (fs *latchFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	return fs.wrap(fs.FS.ReuseForWrite(oldname, newname, category))
}

// Unwrap returns the wrapped filesystem (see vfs.Root).
func (fs *latchFS) Unwrap() vfs.FS {
	return fs.FS
}

// latchFile latches the first write or sync error. Reads are not latched: a
// failed read loses nothing already acknowledged.
type latchFile struct {
	vfs.File
	latch *latch
}

func (f *latchFile) fail(op string, err error) error {
	if err != nil {
		f.latch.set(fmt.Errorf("%s: %w", op, err))
	}
	return err
}

func (f *latchFile) Write(p []byte) (int, error) {
	n, err := f.File.Write(p)
	return n, f.fail("write", err)
}

func (f *latchFile) WriteAt(p []byte, off int64) (int, error) {
	n, err := f.File.WriteAt(p, off)
	return n, f.fail("write", err)
}

func (f *latchFile) Sync() error {
	return f.fail("fsync", f.File.Sync())
}

func (f *latchFile) SyncData() error {
	return f.fail("fdatasync", f.File.SyncData())
}

func (f *latchFile) SyncTo(length int64) (bool, error) {
	full, err := f.File.SyncTo(length)
	return full, f.fail("sync", err)
}
