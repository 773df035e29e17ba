package upstreams

import (
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// algorithmToProto maps the API's algorithm names to the wire enum.
var algorithmToProto = map[Algorithm]agentv1.LoadBalanceAlgorithm{
	RoundRobin:         agentv1.LoadBalanceAlgorithm_ROUND_ROBIN,
	LeastConnections:   agentv1.LoadBalanceAlgorithm_LEAST_CONNECTIONS,
	IPHash:             agentv1.LoadBalanceAlgorithm_IP_HASH,
	WeightedRoundRobin: agentv1.LoadBalanceAlgorithm_WEIGHTED_ROUND_ROBIN,
}

// ToProto converts an upstream to its ConfigUpdate form. Servers keep their
// order; fail_timeout becomes fail_timeout_seconds and the health check's
// interval and timeout become interval_seconds and timeout_seconds. An
// algorithm the API does not know (impossible for a stored upstream) maps to
// LOAD_BALANCE_ALGORITHM_UNSPECIFIED.
func ToProto(u Upstream) *agentv1.Upstream {
	out := &agentv1.Upstream{
		Id:                   u.ID.String(),
		Name:                 u.Name,
		Algorithm:            algorithmToProto[u.Algorithm],
		Servers:              make([]*agentv1.UpstreamServer, len(u.Servers)),
		KeepaliveConnections: uint32(max(u.KeepaliveConnections, 0)),
		HealthCheck: &agentv1.HealthCheckConfig{
			Enabled:            u.HealthCheck.Enabled,
			Path:               u.HealthCheck.Path,
			IntervalSeconds:    uint32(max(u.HealthCheck.Interval, 0)),
			TimeoutSeconds:     uint32(max(u.HealthCheck.Timeout, 0)),
			HealthyThreshold:   uint32(max(u.HealthCheck.HealthyThreshold, 0)),
			UnhealthyThreshold: uint32(max(u.HealthCheck.UnhealthyThreshold, 0)),
		},
	}
	for i, s := range u.Servers {
		out.Servers[i] = &agentv1.UpstreamServer{
			Address:            s.Address,
			Weight:             uint32(max(s.Weight, 0)),
			Backup:             s.Backup,
			Down:               s.Down,
			MaxFails:           uint32(max(s.MaxFails, 0)),
			FailTimeoutSeconds: uint32(max(s.FailTimeout, 0)),
		}
	}
	return out
}
