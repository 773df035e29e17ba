package nginx

import agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"

// Checksum returns the checksum Apply identifies u by (and records as
// Version.Checksum): u's own checksum, or the agent's SHA-256 of u when
// the master sent none.
func Checksum(u *agentv1.ConfigUpdate) string { return checksumOf(u) }
