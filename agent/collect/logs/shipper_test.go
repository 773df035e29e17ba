package logs

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// stream stands in for the controlplane Client: it records what is sent
// and, when autoAck is set, acknowledges it as the master does after
// storing a batch.
type stream struct {
	connected atomic.Bool
	autoAck   atomic.Bool
	ship      *Shipper
	sent      chan proto.Message
}

func newStream(ack bool) *stream {
	s := &stream{sent: make(chan proto.Message, 1000)}
	s.connected.Store(true)
	s.autoAck.Store(ack)
	return s
}

func (s *stream) Connected() bool { return s.connected.Load() }

func (s *stream) SendAccessLogs(b *agentv1.AccessLogBatch) bool {
	return s.deliver(b, b.GetBatchId())
}

func (s *stream) SendLogs(b *agentv1.LogBatch) bool { return s.deliver(b, b.GetBatchId()) }

func (s *stream) deliver(m proto.Message, id string) bool {
	if !s.connected.Load() {
		return false
	}
	s.sent <- m
	if s.autoAck.Load() {
		go s.ship.Ack(&agentv1.Ack{MessageId: id, Success: true})
	}
	return true
}

// next waits for the next sent batch.
func (s *stream) next(t *testing.T, within time.Duration) proto.Message {
	t.Helper()
	select {
	case m := <-s.sent:
		return m
	case <-time.After(within):
		t.Fatalf("no batch sent within %s", within)
		return nil
	}
}

// none checks that nothing is sent for d.
func (s *stream) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case m := <-s.sent:
		t.Fatalf("unexpected batch %v", m)
	case <-time.After(d):
	}
}

func testAccessLine(i int) string {
	return fmt.Sprintf(`{"kind":"http","time":"1700000000.%03d","method":"GET","uri":"/r/%d","status":"200","request_id":"id-%d","virtual_host_id":"vh"}`+"\n", i%1000, i, i)
}

// startShipper runs a Shipper on dir with one access and one error log
// until the test ends (or stop is called).
func startShipper(t *testing.T, dir string, st *stream, mutate func(*ShipperOptions)) (access, errLog string, stop func()) {
	t.Helper()
	access, errLog = filepath.Join(dir, "access.log"), filepath.Join(dir, "error.log")
	opts := ShipperOptions{
		Dir:          dir,
		Sources:      []Source{{Path: access, Kind: KindAccess}, {Path: errLog, Kind: KindError}},
		BatchLines:   3,
		PollInterval: 20 * time.Millisecond,
		RetryDelay:   100 * time.Millisecond,
		Location:     time.UTC,
	}
	if mutate != nil {
		mutate(&opts)
	}
	sh, err := NewShipper(opts)
	if err != nil {
		t.Fatal(err)
	}
	st.ship = sh
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { sh.Run(ctx, st) })
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return access, errLog, stop
}

func uris(m proto.Message) []string {
	var out []string
	for _, e := range m.(*agentv1.AccessLogBatch).GetEntries() {
		out = append(out, e.GetUri())
	}
	return out
}

func TestShipperBatches(t *testing.T) {
	t.Parallel()
	t.Run("ByLines", func(t *testing.T) {
		t.Parallel()
		st := newStream(true)
		access, _, _ := startShipper(t, t.TempDir(), st, func(o *ShipperOptions) { o.BatchInterval = time.Hour })
		for i := range 7 {
			appendFile(t, access, testAccessLine(i))
		}
		if got := uris(st.next(t, 5*time.Second)); !slices.Equal(got, []string{"/r/0", "/r/1", "/r/2"}) {
			t.Errorf("first batch %q", got)
		}
		if got := uris(st.next(t, 5*time.Second)); !slices.Equal(got, []string{"/r/3", "/r/4", "/r/5"}) {
			t.Errorf("second batch %q", got)
		}
		// The seventh line waits for two more or for the interval.
		st.none(t, 300*time.Millisecond)
	})
	t.Run("ByInterval", func(t *testing.T) {
		t.Parallel()
		st := newStream(true)
		access, _, _ := startShipper(t, t.TempDir(), st, func(o *ShipperOptions) {
			o.BatchLines = 1000
			o.BatchInterval = 400 * time.Millisecond
		})
		start := time.Now()
		appendFile(t, access, testAccessLine(1)+testAccessLine(2))
		b := st.next(t, 5*time.Second)
		if got := uris(b); !slices.Equal(got, []string{"/r/1", "/r/2"}) {
			t.Errorf("batch %q", got)
		}
		if waited := time.Since(start); waited < 400*time.Millisecond {
			t.Errorf("batch sent after %s, before the 400ms interval", waited)
		}
	})
	t.Run("ErrorLogLevels", func(t *testing.T) {
		t.Parallel()
		st := newStream(true)
		_, errLog, _ := startShipper(t, t.TempDir(), st, func(o *ShipperOptions) { o.BatchLines = 2 })
		appendFile(t, errLog, "2024/01/02 15:04:05 [warn] 1#1: a warning\n2024/01/02 15:04:06 [crit] 1#1: *3 critical\n")
		lb, ok := st.next(t, 5*time.Second).(*agentv1.LogBatch)
		if !ok || len(lb.GetEntries()) != 2 {
			t.Fatalf("batch %v", lb)
		}
		if e := lb.GetEntries(); e[0].GetLevel() != "warn" || e[0].GetMessage() != "a warning" || e[1].GetLevel() != "crit" ||
			e[1].GetMessage() != "critical" || e[1].GetTimestamp() != time.Date(2024, 1, 2, 15, 4, 6, 0, time.UTC).Unix() || lb.GetBatchId() == "" {
			t.Errorf("entries %v", e)
		}
	})
}

// TestShipperAcks checks that a batch stays spooled until acknowledged and
// is sent again after a reconnect and after a refusal.
func TestShipperAcks(t *testing.T) {
	t.Parallel()
	st := newStream(false)
	dir := t.TempDir()
	access, _, _ := startShipper(t, dir, st, func(o *ShipperOptions) { o.BatchLines = 1 })
	appendFile(t, access, testAccessLine(1))
	first := st.next(t, 5*time.Second).(*agentv1.AccessLogBatch)
	st.none(t, 200*time.Millisecond) // in flight, not re-sent
	if n := len(st.ship.Spool().Batches()); n != 1 {
		t.Fatalf("%d batches spooled before the ack, want 1", n)
	}

	// Disconnected: nothing is sent; after the reconnect the batch again.
	st.connected.Store(false)
	time.Sleep(100 * time.Millisecond)
	st.connected.Store(true)
	again := st.next(t, 5*time.Second).(*agentv1.AccessLogBatch)
	if again.GetBatchId() != first.GetBatchId() || !proto.Equal(again, first) {
		t.Errorf("re-sent batch %v, want %v", again, first)
	}

	// Refused (master's queue full): sent again after the retry delay.
	st.ship.Ack(&agentv1.Ack{MessageId: first.GetBatchId(), Success: false, ErrorMessage: "queue full"})
	retried := st.next(t, 5*time.Second).(*agentv1.AccessLogBatch)
	if retried.GetBatchId() != first.GetBatchId() {
		t.Errorf("retried batch %s, want %s", retried.GetBatchId(), first.GetBatchId())
	}

	// Acknowledged: gone from the spool, never sent again.
	st.ship.Ack(&agentv1.Ack{MessageId: first.GetBatchId(), Success: true})
	if n := len(st.ship.Spool().Batches()); n != 0 {
		t.Errorf("%d batches spooled after the ack", n)
	}
	st.connected.Store(false)
	time.Sleep(60 * time.Millisecond)
	st.connected.Store(true)
	st.none(t, 200*time.Millisecond)
}

// TestShipperRestart stops a Shipper with lines read and not yet sent,
// writes more and starts another on the same state: every line arrives,
// none twice.
func TestShipperRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	seen := map[string]int{}
	collect := func(st *stream, n int) {
		for len(seen) < n {
			for _, u := range uris(st.next(t, 5*time.Second)) {
				seen[u]++
			}
		}
	}
	st1 := newStream(true)
	access, _, stop := startShipper(t, dir, st1, nil)
	for i := range 6 {
		appendFile(t, access, testAccessLine(i))
	}
	collect(st1, 6)
	// Disconnected, two lines are read and spooled at stop, not sent.
	st1.connected.Store(false)
	appendFile(t, access, testAccessLine(6)+testAccessLine(7))
	time.Sleep(100 * time.Millisecond)
	stop()
	appendFile(t, access, testAccessLine(8))

	st2 := newStream(true)
	startShipper(t, dir, st2, func(o *ShipperOptions) { o.BatchInterval = 200 * time.Millisecond })
	collect(st2, 9)
	st2.none(t, 400*time.Millisecond)
	for i := range 9 {
		if u := fmt.Sprintf("/r/%d", i); seen[u] != 1 {
			t.Errorf("%s received %d times", u, seen[u])
		}
	}
}

// TestShipperRotates renames a file it owns once it is read and too
// large, and asks nginx to reopen; the next lines come from the new file.
func TestShipperRotates(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st := newStream(true)
	var reopened atomic.Int32
	access, _, _ := startShipper(t, dir, st, func(o *ShipperOptions) {
		o.BatchLines = 2
		o.Sources[0].Rotate = true
		o.MaxFileBytes = 100
		o.Reopen = func(context.Context) error { reopened.Add(1); return nil }
	})
	appendFile(t, access, testAccessLine(0)+testAccessLine(1))
	st.next(t, 5*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for reopened.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if reopened.Load() != 1 {
		t.Fatalf("reopened %d times, want 1", reopened.Load())
	}
	// nginx, reopening, creates the file again.
	appendFile(t, access, testAccessLine(2)+testAccessLine(3))
	if got := uris(st.next(t, 5*time.Second)); !slices.Equal(got, []string{"/r/2", "/r/3"}) {
		t.Errorf("after the rotation: %q", got)
	}
}
