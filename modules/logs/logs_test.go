package logs

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	dto "github.com/prometheus/client_model/go"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/modules/agents"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

func TestMain(m *testing.M) { apptest.Main(m) }

type acks struct {
	mu  sync.Mutex
	got []*agentv1.Ack
	ch  chan struct{}
}

func (a *acks) ack(x *agentv1.Ack) bool {
	a.mu.Lock()
	a.got = append(a.got, x)
	a.mu.Unlock()
	a.ch <- struct{}{}
	return true
}

func (a *acks) wait(t *testing.T, n int) []*agentv1.Ack {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		a.mu.Lock()
		if len(a.got) >= n {
			out := append([]*agentv1.Ack(nil), a.got...)
			a.mu.Unlock()
			return out
		}
		a.mu.Unlock()
		select {
		case <-a.ch:
		case <-deadline:
			t.Fatalf("timed out waiting for %d acks", n)
		}
	}
}

// TestService_IngestStoresOnceAndQueries stores real batches through the hook,
// redelivers one, and queries them with filters, the cursor and bad input.
func TestService_IngestStoresOnceAndQueries(t *testing.T) {
	a := apptest.NewApp(t, nil)
	m, err := New(a.Deps, Options{})
	if err != nil {
		t.Fatalf("logs.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = m.Run(ctx) }()
	ws, agent := uuid.New(), uuid.New()
	now := time.Now().UTC().Truncate(time.Millisecond)
	var entries []*agentv1.AccessLogEntry
	for i := 0; i < 10; i++ {
		st := uint32(200)
		if i%2 == 1 {
			st = 500
		}
		entries = append(entries, &agentv1.AccessLogEntry{TimestampMs: now.Add(-time.Duration(i) * time.Second).UnixMilli(),
			Method: "GET", Uri: "/api/x", Protocol: "HTTP/1.1", Host: "api.example.com", Status: st, RequestTimeMs: 1.5,
			RemoteAddr: "10.0.0.1", Kind: "http"})
	}
	ak := &acks{ch: make(chan struct{}, 16)}
	batch := agents.LogBatch{AgentID: agent, WorkspaceID: ws, Access: &agentv1.AccessLogBatch{BatchId: "b1", Entries: entries}, Ack: ak.ack}
	m.Ingest(ctx, batch)
	ak.wait(t, 1)
	m.Ingest(ctx, batch) // redelivery
	got := ak.wait(t, 2)
	for _, x := range got {
		if x.GetMessageId() != "b1" || !x.GetSuccess() {
			t.Fatalf("ack %+v, want success for b1", x)
		}
	}
	q, err := ParseQuery(func(string) string { return "" }, now.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	q.WorkspaceID = ws
	page, err := m.Service().AccessLogs(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if page.Meta.Total != 10 || len(page.Data) != 10 {
		t.Fatalf("total %d, %d rows; want 10 stored once", page.Meta.Total, len(page.Data))
	}
	if e := page.Data[0]; e.Status != 200 || e.Method != "GET" || !e.Timestamp.Equal(now) || e.AgentID != agent || e.ResponseTimeMs != 1.5 {
		t.Fatalf("newest entry %+v", e)
	}
	q.StatusClass, q.Limit = 5, 2
	page, err = m.Service().AccessLogs(ctx, q)
	if err != nil || page.Meta.Total != 5 || len(page.Data) != 2 || page.Meta.NextCursor == "" {
		t.Fatalf("5xx page: %+v %v", page.Meta, err)
	}
	c, err := DecodeCursor(page.Meta.NextCursor)
	if err != nil {
		t.Fatal(err)
	}
	q.After = &c
	next, err := m.Service().AccessLogs(ctx, q)
	if err != nil || len(next.Data) != 2 || !next.Data[0].Timestamp.Before(page.Data[1].Timestamp.Time) {
		t.Fatalf("next page %+v %v", next.Data, err)
	}
	for field, v := range map[string]string{"status_code": "abc", "status_class": "9xx", "cursor": "!!", "agent_id": "x", "from": "2030-01-01T00:00:00Z"} {
		_, err := ParseQuery(func(n string) string {
			if n == field {
				return v
			}
			return ""
		}, now)
		var ve *app.ValidationError
		if !errors.As(err, &ve) || ve.Fields[0].Field != field {
			t.Errorf("%s=%s: %v, want a validation error naming it", field, v, err)
		}
	}
}

// TestService_RetentionDropsOldPartitionAndTrimsWorkspace drops a partition older
// than the global retention and deletes a workspace's rows beyond its own.
func TestService_RetentionDropsOldPartitionAndTrimsWorkspace(t *testing.T) {
	a := apptest.NewApp(t, nil)
	m, err := New(a.Deps, Options{})
	if err != nil {
		t.Fatalf("logs.New: %v", err)
	}
	ctx := context.Background()
	svc := m.Service()
	old := time.Now().UTC().AddDate(0, 0, -20)
	if err := svc.EnsurePartition(ctx, old); err != nil {
		t.Fatal(err)
	}
	var orgID, wsID uuid.UUID
	if err := a.Deps.Pool.QueryRow(ctx, "INSERT INTO organizations (name, slug) VALUES ('o','o') RETURNING id").Scan(&orgID); err != nil {
		t.Skipf("cannot create organization directly: %v", err)
	}
	if err := a.Deps.Pool.QueryRow(ctx, "INSERT INTO workspaces (organization_id, name, slug) VALUES ($1,'w','w') RETURNING id", orgID).Scan(&wsID); err != nil {
		t.Skipf("cannot create workspace directly: %v", err)
	}
	days := 2
	if _, err := svc.SetSettings(ctx, wsID, SettingsParams{RetentionDays: &days}); err != nil {
		t.Fatal(err)
	}
	five := time.Now().UTC().AddDate(0, 0, -5)
	for _, ts := range []time.Time{old, five, time.Now().UTC()} {
		if ts != old {
			if err := svc.EnsurePartition(ctx, ts); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := a.Deps.Pool.Exec(ctx, "INSERT INTO access_logs (workspace_id, agent_id, ts) VALUES ($1, $2, $3)", wsID, uuid.New(), ts); err != nil {
			t.Fatal(err)
		}
	}
	res, err := svc.ApplyRetention(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.DroppedPartitions) != 1 || res.DroppedPartitions[0] != svc.partitions.Name(old) {
		t.Fatalf("dropped %v, want the partition of %s", res.DroppedPartitions, old)
	}
	var n int
	if err := a.Deps.Pool.QueryRow(ctx, "SELECT count(*) FROM access_logs WHERE workspace_id = $1", wsID).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d rows left (%v), want only today's", n, err)
	}
	big := 100
	if _, err := svc.SetSettings(ctx, wsID, SettingsParams{RetentionDays: &big}); err == nil {
		t.Fatal("retention_days above logs.retention accepted")
	}
}

// TestService_IngestDroppedLinesCountedOncePerStoredBatch checks that the lines an
// agent reports dropped reach nxmesh_logs_agent_dropped_lines_total once: a
// redelivered batch, or one refused and sent again, reports the same lines.
func TestService_IngestDroppedLinesCountedOncePerStoredBatch(t *testing.T) {
	a := apptest.NewApp(t, nil)
	m, err := New(a.Deps, Options{})
	if err != nil {
		t.Fatalf("logs.New: %v", err)
	}
	ak := &acks{ch: make(chan struct{}, 16)}
	ws, agent := uuid.New(), uuid.New()
	batch := agents.LogBatch{AgentID: agent, WorkspaceID: ws, Ack: ak.ack, Access: &agentv1.AccessLogBatch{
		BatchId: "dropped-1", DroppedLines: 7,
		Entries: []*agentv1.AccessLogEntry{{TimestampMs: time.Now().UnixMilli(), Method: "GET", Uri: "/", Status: 200, Kind: "http"}},
	}}
	errBatch := agents.LogBatch{AgentID: agent, WorkspaceID: ws, Ack: ak.ack, Errors: &agentv1.LogBatch{
		BatchId: "dropped-2", DroppedLines: 3, Entries: []*agentv1.LogEntry{{Level: "error", Message: "boom"}},
	}}
	// Before Run the queue holds them; a stopped ingester refuses them.
	m.Ingest(context.Background(), batch)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = m.Run(ctx) }()
	ak.wait(t, 1)
	m.Ingest(ctx, batch) // redelivery
	m.Ingest(ctx, errBatch)
	m.Ingest(ctx, errBatch)
	for _, x := range ak.wait(t, 4) {
		if !x.GetSuccess() {
			t.Fatalf("ack %+v, want success", x)
		}
	}
	for kind, want := range map[string]float64{"access": 7, "error": 3} {
		var got dto.Metric
		if err := m.in.metrics.agentDrops.WithLabelValues(kind).Write(&got); err != nil {
			t.Fatal(err)
		}
		if got := got.GetCounter().GetValue(); got != want {
			t.Errorf("dropped %s lines counted %v, want %v", kind, got, want)
		}
	}
}
