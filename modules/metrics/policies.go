package metrics

import "github.com/nxmesh/nxmesh/app/authz"

// ObjMetrics is the Casbin object of the traffic and host metrics.
const ObjMetrics = "metrics.metric"

// policies is the role matrix of the module:
//
//	object          read    write
//	metrics.metric  viewer  -
//
// Nothing is written through the API: agents write through the ingest.
func policies() []authz.Policy {
	return authz.AtLeast(authz.RoleViewer, ObjMetrics, authz.Read)
}
