package agents

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/proto/compress"
)

// This file bounds and compresses what travels on the agents' streams, and
// records configuration updates that could not be delivered.
//
//   - The master receives and sends messages of up to grpc.max_message_bytes
//     (Service.maxMessageBytes); the vhosts module refuses changes whose update
//     would be larger.
//   - Every agent states the largest message it accepts in the request
//     metadata of its stream (MaxMessageBytesMetadata); an agent that states
//     none is held to gRPC's default receive limit, 4 MiB.
//   - Streams are gzip-compressed both ways when the agent accepts gzip (it
//     lists it in grpc-accept-encoding, as every gRPC client with the gzip
//     codec registered does, or sends gzip itself); configuration text shrinks
//     about tenfold. Agents that do not accept it get uncompressed messages.
//     Size limits apply to the uncompressed message.
//   - An update larger than what the agent or the master accepts is not sent:
//     the agent's apply_status becomes failed with the reason in apply_error
//     (last_error in the API), as when sending fails for any other reason.

// MaxMessageBytesMetadata is the request metadata key of an agent's stream
// holding, in decimal, the largest message the agent accepts
// (controlplane.MaxMessageBytesMetadata on the agent's side).
const MaxMessageBytesMetadata = "nxmesh-max-message-bytes"

// legacyAgentLimit is the receive limit of agents that state none: gRPC's
// default.
const legacyAgentLimit = 4 << 20

// deliveryServerOptions are the gRPC server options for message sizes and
// compression.
func deliveryServerOptions(maxBytes int) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxBytes),
		grpc.MaxSendMsgSize(maxBytes),
		grpc.ChainStreamInterceptor(compressStreams),
	}
}

// compressStreams makes the server gzip what it sends on a stream whose
// client accepts gzip.
func compressStreams(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if acceptsGzip(ss.Context()) {
		// The only failure is a client that does not accept gzip, excluded
		// above; the stream then stays uncompressed.
		_ = grpc.SetSendCompressor(ss.Context(), compress.Name)
	}
	return handler(srv, ss)
}

// acceptsGzip reports whether the client of the stream of ctx accepts
// gzip-compressed messages.
func acceptsGzip(ctx context.Context) bool {
	names, err := grpc.ClientSupportedCompressors(ctx)
	return err == nil && slices.Contains(names, compress.Name)
}

// agentReceiveLimit is the largest message the agent of a stream accepts, from
// its request metadata (legacyAgentLimit when it states none or nonsense).
func agentReceiveLimit(ctx context.Context) int {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get(MaxMessageBytesMetadata) {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			return n
		}
	}
	return legacyAgentLimit
}

// undeliverable says why a message of size bytes cannot go to an agent that
// accepts agentLimit bytes from a master that sends at most masterLimit, or
// is "" when it can.
func undeliverable(size, agentLimit, masterLimit int) string {
	switch {
	case size > masterLimit:
		return fmt.Sprintf("the configuration update is %s, over the master's limit of %s (grpc.max_message_bytes)",
			formatBytes(size), formatBytes(masterLimit))
	case size > agentLimit:
		return fmt.Sprintf("the configuration update is %s, over the %s the agent accepts; "+
			"raise the agent's --max-message-bytes (NXMESH_AGENT_MAX_MESSAGE_BYTES) or upgrade it (agents that state no limit accept 4 MiB)",
			formatBytes(size), formatBytes(agentLimit))
	}
	return ""
}

// formatBytes writes n bytes in MiB with two decimals ("4.60 MiB").
func formatBytes(n int) string {
	return strconv.FormatFloat(float64(n)/(1<<20), 'f', 2, 64) + " MiB"
}

// recordUndelivered records that the configuration (version, checksum,
// configID) meant for the agent on stream streamID could not be delivered:
// desired_version and desired_checksum take it, apply_status becomes failed
// with message as apply_error, the agent turns degraded if it was online, and
// config.applied is published with success false. errGone when streamID is no
// longer the agent's stream.
func (s *Service) recordUndelivered(ctx context.Context, agentID, streamID uuid.UUID, version int64, checksum, configID, message string) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		now := s.now()
		var row agentRow
		err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Take(&row, "id = ? AND stream_id = ?", agentID, streamID).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return errGone
		}
		if err != nil {
			return fmt.Errorf("read agent %s: %w", agentID, err)
		}
		message = clip(message, 8192)
		updates := map[string]any{
			"desired_version": version, "desired_checksum": checksum, "apply_status": ApplyFailed, "apply_error": message,
			"drift": false, "updated_at": now,
		}
		if row.State == StateOnline || row.State == StateDegraded {
			updates["state"] = stateOf(ApplyFailed, row.Health)
		}
		if err := tx.Model(&agentRow{}).Where("id = ?", agentID).Updates(updates).Error; err != nil {
			return fmt.Errorf("record undelivered configuration of agent %s: %w", agentID, err)
		}
		if err := recordResult(tx, agentID, version, ApplyFailed, message, now); err != nil {
			return err
		}
		orgID, err := workspaceOrg(tx, row.WorkspaceID)
		if err != nil {
			return err
		}
		return s.publish(ctx, tx, app.Event{
			Type: EventConfigApplied, WorkspaceID: row.WorkspaceID, OrgID: orgID, Timestamp: now,
			Data: map[string]any{
				"agent_id": agentID.String(), "config_id": configID, "version": version,
				"duration_ms": int64(0), "success": false, "status": ApplyFailed, "error_message": message,
			},
		})
	})
}
