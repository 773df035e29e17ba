package agents

import (
	"context"
	"encoding/json"
	"log/slog"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// TestService_RolloutBatchWritesAnAnsweredPushWithItsAnswer stores a push
// and a status of the same agent in one rollout batch: a final answer to
// that push writes the push with it (the push's pending state never
// reaches the database), anything else leaves the push written as pushed.
func TestService_RolloutBatchWritesAnAnsweredPushWithItsAnswer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		name        string
		status      agentv1.ConfigApplyStatus
		current     bool
		version     int64 // the status's version; the push is version 7
		merged      bool
		applyStatus string
		applied     int64
		result      string // agent_config_results of version 7
	}{
		{"success", agentv1.ConfigApplyStatus_SUCCESS, true, 7, true, ApplySuccess, 7, ApplySuccess},
		{"rolled back", agentv1.ConfigApplyStatus_ROLLED_BACK, true, 7, true, ApplyRolledBack, 0, ApplyRolledBack},
		{"still applying", agentv1.ConfigApplyStatus_APPLYING, true, 7, false, ApplyApplying, 0, ApplyApplying},
		{"an earlier push's answer", agentv1.ConfigApplyStatus_SUCCESS, false, 6, false, ApplyPending, 6, ApplyPending},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := e.setup(t)
			a, _, _ := b.online(t, "edge", nil)
			// The first configuration's push is recorded as it is sent.
			b.awaitDetail(t, a.id, "pushed", func(d AgentDetail) bool { return d.ApplyStatus == ApplyPending })
			row := b.row(t, a.id)
			if row.StreamID == nil {
				t.Fatal("the agent has no stream")
			}
			// A stale drift flag shows whether the push was written.
			if err := b.db.Exec("UPDATE agents SET drift = true WHERE id = ?", a.id).Error; err != nil {
				t.Fatal(err)
			}
			push := pushItem{AgentID: a.id, StreamID: *row.StreamID, Version: 7, Checksum: "c7"}
			st := statusItem{agentID: a.id, streamID: *row.StreamID, r: statusReport{
				Status:  &agentv1.ConfigStatus{ConfigId: "v", Version: tc.version, Status: tc.status, ErrorMessage: "nginx said no"},
				Current: tc.current, Checksum: "c7",
			}}
			if got := answeredPushes([]pushItem{push}, []statusItem{st}); (len(got) == 1) != tc.merged {
				t.Fatalf("answered pushes %v, want merged %v", got, tc.merged)
			}
			pushErrs, statusErrs, err := b.svc.recordRollout(b.ctx, []pushItem{push}, []statusItem{st}, nil)
			if err != nil || pushErrs[0] != nil || statusErrs[0] != nil {
				t.Fatalf("record: %v %v %v", err, pushErrs, statusErrs)
			}
			got := b.row(t, a.id)
			if got.DesiredVersion != 7 || got.DesiredChecksum != "c7" || got.Drift || got.ApplyStatus != tc.applyStatus || got.AppliedVersion != tc.applied {
				t.Fatalf("agent: desired %d %q drift %v, apply status %q, applied %d; want desired 7 \"c7\", no drift, %q, applied %d",
					got.DesiredVersion, got.DesiredChecksum, got.Drift, got.ApplyStatus, got.AppliedVersion, tc.applyStatus, tc.applied)
			}
			var result string
			if err := b.db.Raw("SELECT status FROM agent_config_results WHERE agent_id = ? AND version = 7", a.id).Scan(&result).Error; err != nil {
				t.Fatal(err)
			}
			if result != tc.result {
				t.Fatalf("version 7 on the agent: %q, want %q", result, tc.result)
			}
		})
	}
	t.Run("an unchanged version follows the push in flight", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		a, _, _ := b.online(t, "edge", nil)
		b.awaitDetail(t, a.id, "pushed", func(d AgentDetail) bool { return d.ApplyStatus == ApplyPending })
		row := b.row(t, a.id)
		// The agent ran what it had: a version that changes nothing for it
		// must not take that status while version 7 is on its way.
		if err := b.db.Exec("UPDATE agents SET apply_status = ? WHERE id = ?", ApplySuccess, a.id).Error; err != nil {
			t.Fatal(err)
		}
		push := pushItem{AgentID: a.id, StreamID: *row.StreamID, Version: 7, Checksum: "c7"}
		if _, _, err := b.svc.recordRollout(b.ctx, []pushItem{push}, nil, []unchangedItem{{AgentID: a.id, Version: 8}}); err != nil {
			t.Fatal(err)
		}
		result := func(v int64) string {
			t.Helper()
			var st string
			if err := b.db.Raw("SELECT status FROM agent_config_results WHERE agent_id = ? AND version = ?", a.id, v).Scan(&st).Error; err != nil {
				t.Fatal(err)
			}
			return st
		}
		if got := result(8); got != ApplyPending {
			t.Fatalf("version 8 while 7 is in flight: %q, want %q", got, ApplyPending)
		}
		st := statusItem{agentID: a.id, streamID: *row.StreamID, r: statusReport{
			Status: &agentv1.ConfigStatus{ConfigId: "v7", Version: 7, Status: agentv1.ConfigApplyStatus_SUCCESS}, Current: true, Checksum: "c7",
		}}
		if _, _, err := b.svc.recordRollout(b.ctx, nil, []statusItem{st}, nil); err != nil {
			t.Fatal(err)
		}
		if got7, got8 := result(7), result(8); got7 != ApplySuccess || got8 != ApplySuccess {
			t.Fatalf("after 7's answer: version 7 %q, version 8 %q; want both %q", got7, got8, ApplySuccess)
		}
	})
	t.Run("another stream's push is gone", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		a, _, _ := b.online(t, "edge", nil)
		pushErrs, _, err := b.svc.recordRollout(b.ctx, []pushItem{{AgentID: a.id, StreamID: uuid.New(), Version: 7, Checksum: "c7"}}, nil, nil)
		if err != nil || pushErrs[0] != errGone {
			t.Fatalf("record: %v %v, want errGone", err, pushErrs)
		}
	})
}

// TestHealthWrite_AppendJSONMatchesEncodingJSON checks the hand-written
// encoding of a health write against encoding/json's, for the strings
// that take the fast path and those that need escaping.
func TestHealthWrite_AppendJSONMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	id := uuid.MustParse("0b5d2c3e-8f4a-4c1e-9d2b-7a6e5f4c3b2a")
	for _, tc := range []struct {
		name string
		w    healthWrite
	}{
		{"plain", healthWrite{ID: id, Health: json.RawMessage(`{"alerts":[],"cpu_percent":1.5}`), State: StateOnline, ReportedChecksum: "sha256:abc", Drift: true}},
		{"agent info and version", healthWrite{ID: id, Health: json.RawMessage(`{}`), State: StateDegraded, AgentInfo: json.RawMessage(`{"version":"1.2.3"}`), Version: "1.2.3"}},
		{"escapes", healthWrite{ID: id, Health: json.RawMessage(`null`), State: "on\"line\\", ReportedChecksum: "tab\there\n\x01", Version: "é<&>"}},
		{"empty strings", healthWrite{ID: id, Health: json.RawMessage(`{}`)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.w.appendJSON(nil)
			want, err := json.Marshal(tc.w)
			if err != nil {
				t.Fatal(err)
			}
			var g, w map[string]any
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatalf("appendJSON wrote invalid JSON %s: %v", got, err)
			}
			if err := json.Unmarshal(want, &w); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(g, w) {
				t.Fatalf("appendJSON = %s, encoding/json = %s", got, want)
			}
		})
	}
}

// TestPushAnswers covers which rollout batches wait for answers, and
// which have them all: a push is answered only by a final status of its
// version on its stream.
func TestPushAnswers(t *testing.T) {
	t.Parallel()
	a, b := &conn{}, &conn{}
	push := func(c *conn, v int64) rolloutItem { return rolloutItem{conn: c, push: &pushItem{Version: v}} }
	status := func(c *conn, v int64, st agentv1.ConfigApplyStatus, current bool) rolloutItem {
		return rolloutItem{conn: c, status: &statusReport{Status: &agentv1.ConfigStatus{Version: v, Status: st}, Current: current}}
	}
	ok := agentv1.ConfigApplyStatus_SUCCESS
	for _, tc := range []struct {
		name              string
		batch             []rolloutItem
		waiting, complete bool
	}{
		{"nothing", nil, false, false},
		{"a push alone", []rolloutItem{push(a, 2)}, true, false},
		{"a push and its success", []rolloutItem{push(a, 2), status(a, 2, ok, true)}, false, true},
		{"a push and its rollback", []rolloutItem{push(a, 2), status(a, 2, agentv1.ConfigApplyStatus_ROLLED_BACK, true)}, false, true},
		{"an intermediate status", []rolloutItem{push(a, 2), status(a, 2, agentv1.ConfigApplyStatus_APPLYING, true)}, true, false},
		{"the answer to an older version", []rolloutItem{push(a, 3), status(a, 2, ok, true)}, true, false},
		{"an answer that is not current", []rolloutItem{push(a, 2), status(a, 2, ok, false)}, true, false},
		{"another agent's answer", []rolloutItem{push(a, 2), status(b, 2, ok, true)}, true, false},
		{"a later push after the answer", []rolloutItem{push(a, 2), status(a, 2, ok, true), push(a, 3)}, true, false},
		{"statuses only", []rolloutItem{status(a, 2, ok, true)}, false, false},
		{"two agents answered", []rolloutItem{push(a, 2), push(b, 2), status(b, 2, ok, true), status(a, 2, agentv1.ConfigApplyStatus_FAILED, true)}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &pushAnswers{}
			// Reset empties what came before.
			p.add(push(b, 9))
			p.reset()
			for _, it := range tc.batch {
				p.add(it)
			}
			waiting, complete := p.state()
			if waiting != tc.waiting || complete != tc.complete {
				t.Fatalf("state = %v, %v, want %v, %v", waiting, complete, tc.waiting, tc.complete)
			}
		})
	}
}

// TestBatcher_BatchWaitsForAnswers: a batch whose items expect others is
// not stored before answerGap without new items, where a settled one would
// be after gap; a complete one is stored before gap.
func TestBatcher_BatchWaitsForAnswers(t *testing.T) {
	t.Parallel()
	stored := make(chan []string, 4)
	b := newBatcher("test", 0, slog.New(slog.DiscardHandler), func(_ context.Context, items []string) { stored <- items })
	b.gap = time.Millisecond
	b.answers = &answerOf{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.run(ctx)

	start := time.Now()
	b.add("push")
	got := <-stored
	if waited := time.Since(start); waited < answerGap {
		t.Fatalf("an unanswered batch was stored after %s, before answerGap (%s)", waited, answerGap)
	}
	if !slices.Equal(got, []string{"push"}) {
		t.Fatalf("stored %v", got)
	}

	b.add("push")
	b.add("answer")
	if got := <-stored; !slices.Equal(got, []string{"push", "answer"}) {
		t.Fatalf("a push and its answer added together were stored as %v", got)
	}

	// A complete batch does not wait for the gap.
	b.gap = time.Hour
	start = time.Now()
	b.add("push")
	b.add("answer")
	<-stored
	if waited := time.Since(start); waited > gapMax {
		t.Fatalf("a complete batch was stored after %s", waited)
	}
}

// answerOf is a tracker for strings: a "push" waits for an "answer".
type answerOf struct{ pushes, answers int }

func (a *answerOf) add(it string) {
	switch it {
	case "push":
		a.pushes++
	case "answer":
		a.answers++
	}
}

func (a *answerOf) state() (bool, bool) {
	return a.pushes > a.answers, a.pushes > 0 && a.pushes == a.answers
}

func (a *answerOf) reset() { *a = answerOf{} }

func (a *answerOf) met() int               { return 0 }
func (a *answerOf) settled(it string) bool { return true }
func (a *answerOf) rebase()                {}

// TestBatcher_SettledPartStoredBeforeTheRest: once settledFlush pushes of a
// waiting rollout batch are answered, those agents' items are stored at
// once, in order, and the unanswered ones wait on in the batch and are
// stored with their answers.
func TestBatcher_SettledPartStoredBeforeTheRest(t *testing.T) {
	t.Parallel()
	stored := make(chan []rolloutItem, 4)
	b := newBatcher("test", 0, slog.New(slog.DiscardHandler), func(_ context.Context, items []rolloutItem) { stored <- items })
	b.gap = time.Millisecond
	b.answers = &pushAnswers{}
	b.max = 1 << 20
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.run(ctx)

	const later = 10
	conns := make([]*conn, settledFlush+later)
	for i := range conns {
		conns[i] = &conn{agentID: uuid.New()}
	}
	answer := func(c *conn) rolloutItem {
		return rolloutItem{conn: c, status: &statusReport{Status: &agentv1.ConfigStatus{Version: 2, Status: agentv1.ConfigApplyStatus_SUCCESS}, Current: true}}
	}
	for _, c := range conns {
		b.add(rolloutItem{conn: c, push: &pushItem{AgentID: c.agentID, Version: 2}})
	}
	start := time.Now()
	for _, c := range conns[:settledFlush] {
		b.add(answer(c))
	}
	first := <-stored
	if waited := time.Since(start); waited >= answerGap {
		t.Fatalf("the settled part was stored after %s, not before answerGap (%s)", waited, answerGap)
	}
	check := func(items []rolloutItem, want []*conn) {
		t.Helper()
		if len(items) != 2*len(want) {
			t.Fatalf("stored %d items, want %d", len(items), 2*len(want))
		}
		seen := map[*conn]int{}
		for _, it := range items {
			n := seen[it.conn]
			if (n == 0) != (it.push != nil) {
				t.Fatalf("agent %s: item %d is not push then answer", it.conn.agentID, n)
			}
			seen[it.conn] = n + 1
		}
		for _, c := range want {
			if seen[c] != 2 {
				t.Fatalf("agent %s: %d items stored, want its push and answer", c.agentID, seen[c])
			}
		}
	}
	check(first, conns[:settledFlush])

	for _, c := range conns[settledFlush:] {
		b.add(answer(c))
	}
	check(<-stored, conns[settledFlush:])
	select {
	case more := <-stored:
		t.Fatalf("%d more items stored", len(more))
	case <-time.After(2 * answerGap):
	}
}

// TestRolloutRows_AppendJSONMatchesEncodingJSON: the rows rollout
// statements read are written by hand as encoding/json writes them.
func TestRolloutRows_AppendJSONMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	v, sum := int64(12), "sha256:<&>\"x\""
	for _, tc := range []struct {
		name string
		row  jsonRow
	}{
		{"push", pushItem{AgentID: uuid.New(), StreamID: uuid.New(), Version: 3, Checksum: "abc"}},
		{"unchanged", unchangedItem{AgentID: uuid.New(), Version: -1}},
		{"version status", versionStatus{AgentID: uuid.New(), Version: 9, Status: ApplyFailed, Message: "nginx: [emerg] \"x\"\n\tline 2 é"}},
		{"status, alone", statusWrite{ID: uuid.New(), ApplyStatus: ApplySuccess, AppliedVersion: 4, AppliedChecksum: "c", State: StateOnline}},
		{"status with its push", statusWrite{ID: uuid.New(), ApplyStatus: ApplyRolledBack, ApplyError: "bad", State: StateDegraded, DesiredVersion: &v, DesiredChecksum: &sum}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := json.Marshal(tc.row)
			if err != nil {
				t.Fatal(err)
			}
			if got := tc.row.appendJSON(nil); string(got) != string(want) {
				t.Fatalf("got  %s\nwant %s", got, want)
			}
		})
	}
}
