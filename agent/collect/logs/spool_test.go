package logs

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// errorEntries returns n error-log entries of about size bytes each.
func errorEntries(n, size int, tag string) []*agentv1.LogEntry {
	out := make([]*agentv1.LogEntry, n)
	for i := range out {
		out[i] = &agentv1.LogEntry{Timestamp: 1700000000, Level: "error", Message: fmt.Sprintf("%s-%d %s", tag, i, strings.Repeat("x", size))}
	}
	return out
}

func batchSize(entries []*agentv1.LogEntry) int64 {
	return int64(proto.Size(&agentv1.LogBatch{BatchId: newBatchID(), Entries: entries}))
}

func TestSpoolBoundsDropOldest(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	one := errorEntries(10, 1000, "a")
	size := batchSize(one)
	// Room for three batches, not four.
	limit := 3*size + 3*droppedMargin + 40
	s, err := OpenSpool(dir, limit)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 3 {
		b, err := s.AddErrors(errorEntries(10, 1000, fmt.Sprint("b", i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, b.ID)
	}
	if got := len(s.Batches()); got != 3 {
		t.Fatalf("%d batches, want 3", got)
	}
	// An access batch needs room too: the oldest (error) batch goes, and
	// its 10 lines are reported by the next error batch, not this one.
	acc, err := s.AddAccess([]*agentv1.AccessLogEntry{{Status: 200, Uri: strings.Repeat("/p", 4000)}})
	if err != nil {
		t.Fatal(err)
	}
	if s.Size() > limit {
		t.Errorf("spool holds %d bytes, limit %d", s.Size(), limit)
	}
	bs := s.Batches()
	if len(bs) != 3 || bs[0].ID != ids[1] || bs[2].ID != acc.ID {
		t.Fatalf("batches %+v: want the oldest dropped", bs)
	}
	msg, err := s.Read(bs[2])
	if err != nil {
		t.Fatal(err)
	}
	if d := msg.(*agentv1.AccessLogBatch).GetDroppedLines(); d != 0 {
		t.Errorf("access batch dropped_lines %d, want 0", d)
	}
	if d := s.Dropped(KindError); d != 10 {
		t.Errorf("pending dropped error lines %d, want 10", d)
	}

	// The count survives a restart and goes with the next error batch.
	s2, err := OpenSpool(dir, limit)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(s2.Batches()); got != 3 || s2.Size() != s.Size() {
		t.Fatalf("reopened: %d batches of %d bytes, want 3 of %d", got, s2.Size(), s.Size())
	}
	next, err := s2.AddErrors(errorEntries(1, 10, "c"))
	if err != nil {
		t.Fatal(err)
	}
	msg, err = s2.Read(next)
	if err != nil {
		t.Fatal(err)
	}
	lb := msg.(*agentv1.LogBatch)
	if lb.GetDroppedLines() != 10 || lb.GetBatchId() != next.ID || len(lb.GetEntries()) != 1 {
		t.Errorf("next error batch: dropped_lines %d, id %q (%q), %d entries", lb.GetDroppedLines(), lb.GetBatchId(), next.ID, len(lb.GetEntries()))
	}
	if d := s2.Dropped(KindError); d != 0 {
		t.Errorf("dropped error lines after they were reported: %d", d)
	}
	// b1, left by the first run, is the oldest: dropped for d, its lines
	// counted from its file and reported by d itself.
	d, err := s2.AddErrors(errorEntries(10, 1000, "d"))
	if err != nil {
		t.Fatal(err)
	}
	if bs := s2.Batches(); bs[0].ID != ids[2] {
		t.Fatalf("oldest batch %s, want %s", bs[0].ID, ids[2])
	}
	msg, err = s2.Read(d)
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.(*agentv1.LogBatch).GetDroppedLines(); got != 10 {
		t.Errorf("dropped_lines for a batch of the previous run: %d, want 10", got)
	}
}

func TestSpoolRemoveAndOversize(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := OpenSpool(dir, 4096)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.AddErrors(errorEntries(2, 10, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if !s.Remove(b.ID) || s.Remove(b.ID) {
		t.Error("Remove: want true once, then false")
	}
	if s.Size() != 0 || len(s.Batches()) != 0 {
		t.Errorf("after Remove: %d bytes, %d batches", s.Size(), len(s.Batches()))
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".pb") {
			t.Errorf("file %s left after Remove", e.Name())
		}
	}
	// Larger than the whole spool: refused, and counted as dropped.
	if _, err := s.AddErrors(errorEntries(3, 4096, "big")); err == nil {
		t.Fatal("a batch larger than the spool was accepted")
	}
	if d := s.Dropped(KindError); d != 3 {
		t.Errorf("dropped %d, want 3", d)
	}
	if _, err := os.Stat(filepath.Join(dir, droppedFile)); err != nil {
		t.Errorf("dropped count not saved: %v", err)
	}
}

// TestSpoolDropsAccountEveryLine fills a spool far past its bound: every line
// is either in a spooled batch or counted in the dropped_lines of one (or in
// Dropped), also when the batches that carried earlier counts are dropped in
// turn, in this run and after a reopen.
func TestSpoolDropsAccountEveryLine(t *testing.T) {
	t.Parallel()
	for _, reopen := range []bool{false, true} {
		t.Run(fmt.Sprintf("reopen=%v", reopen), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			size := batchSize(errorEntries(10, 1000, "a"))
			limit := 2*size + 2*droppedMargin + 40 // two batches
			s, err := OpenSpool(dir, limit)
			if err != nil {
				t.Fatal(err)
			}
			const batches = 12
			for i := range batches {
				if reopen && i%3 == 2 {
					if s, err = OpenSpool(dir, limit); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := s.AddErrors(errorEntries(10, 1000, fmt.Sprint("b", i))); err != nil {
					t.Fatal(err)
				}
			}
			spooled, reported := 0, s.Dropped(KindError)
			for _, b := range s.Batches() {
				msg, err := s.Read(b)
				if err != nil {
					t.Fatal(err)
				}
				lb := msg.(*agentv1.LogBatch)
				spooled += len(lb.GetEntries())
				reported += lb.GetDroppedLines()
			}
			if spooled+int(reported) != batches*10 || spooled != 20 {
				t.Errorf("%d lines spooled + %d reported dropped, want %d with 20 spooled", spooled, reported, batches*10)
			}
		})
	}
}
