package agents

import (
	"testing"

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
			pushErrs, statusErrs, err := b.svc.recordRollout(b.ctx, []pushItem{push}, []statusItem{st})
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
	t.Run("another stream's push is gone", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		a, _, _ := b.online(t, "edge", nil)
		pushErrs, _, err := b.svc.recordRollout(b.ctx, []pushItem{{AgentID: a.id, StreamID: uuid.New(), Version: 7, Checksum: "c7"}}, nil)
		if err != nil || pushErrs[0] != errGone {
			t.Fatalf("record: %v %v, want errGone", err, pushErrs)
		}
	})
}
