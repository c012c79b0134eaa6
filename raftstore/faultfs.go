package raftstore

import (
	"fmt"
	"os"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// diskFullFS is the fault injection behind Config.DebugDiskFullFile: while
// a file exists at trigger, creating, writing and syncing any Pebble file
// fails with ENOSPC, as on a full disk. Reads keep working. It exists for
// the fault-injection suite (chaos/), which cannot rely on mounting a
// size-limited filesystem on every CI machine.
type diskFullFS struct {
	vfs.FS
	trigger string
}

func (fs diskFullFS) full(op, name string) error {
	if _, err := os.Stat(fs.trigger); err == nil {
		return fmt.Errorf("%s %s: %w (injected: %s exists)", op, name, syscall.ENOSPC, fs.trigger)
	}
	return nil
}

func (fs diskFullFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return diskFullFile{File: f, fs: fs, name: name}, nil
}

// Create implements vfs.FS.
func (fs diskFullFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	if err := fs.full("create", name); err != nil {
		return nil, err
	}
	f, err := fs.FS.Create(name, category)
	return fs.wrap(name, f, err)
}

// OpenReadWrite implements vfs.FS.
func (fs diskFullFS) OpenReadWrite(name string, category vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.OpenReadWrite(name, category, opts...)
	return fs.wrap(name, f, err)
}

// ReuseForWrite implements vfs.FS.
func (fs diskFullFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	if err := fs.full("reuse", newname); err != nil {
		return nil, err
	}
	f, err := fs.FS.ReuseForWrite(oldname, newname, category)
	return fs.wrap(newname, f, err)
}

// Unwrap implements vfs.FS.
func (fs diskFullFS) Unwrap() vfs.FS { return fs.FS }

type diskFullFile struct {
	vfs.File
	fs   diskFullFS
	name string
}

func (f diskFullFile) Write(p []byte) (int, error) {
	if err := f.fs.full("write", f.name); err != nil {
		return 0, err
	}
	return f.File.Write(p)
}

func (f diskFullFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.fs.full("write", f.name); err != nil {
		return 0, err
	}
	return f.File.WriteAt(p, off)
}

func (f diskFullFile) Sync() error {
	if err := f.fs.full("fsync", f.name); err != nil {
		return err
	}
	return f.File.Sync()
}

func (f diskFullFile) SyncData() error {
	if err := f.fs.full("fdatasync", f.name); err != nil {
		return err
	}
	return f.File.SyncData()
}

func (f diskFullFile) SyncTo(length int64) (bool, error) {
	if err := f.fs.full("sync", f.name); err != nil {
		return false, err
	}
	return f.File.SyncTo(length)
}
