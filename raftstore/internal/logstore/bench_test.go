package logstore

import (
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"
)

// BenchmarkStoreLogs measures synced StoreLogs calls of 1, 16 and 256
// entries of 200 bytes on the real disk; ns/op is per call (one fsync),
// ns/entry divides by the batch size.
func BenchmarkStoreLogs(b *testing.B) {
	for _, size := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			db, err := Open(b.TempDir(), Options{FS: vfs.Default})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			s := mustGroup(b, db, 1)
			logs := make([]*raft.Log, size)
			for i := range logs {
				logs[i] = &raft.Log{Term: 1, Type: raft.LogCommand, Data: make([]byte, 200)}
			}
			next := uint64(1)
			b.SetBytes(int64(200 * size))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				for _, l := range logs {
					l.Index = next
					next++
				}
				if err := s.StoreLogs(logs); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*size), "ns/entry")
		})
	}
}
