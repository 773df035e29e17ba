package upstreams

import "github.com/nxmesh/nxmesh/app/authz"

// ObjUpstream is the Casbin object checked by this module's routes.
const ObjUpstream = "upstreams.upstream"

// policies is the role matrix of the module:
//
//	object              read    write     delete
//	upstreams.upstream  viewer  operator  operator
func policies() []authz.Policy {
	var ps []authz.Policy
	ps = append(ps, authz.AtLeast(authz.RoleViewer, ObjUpstream, authz.Read)...)
	ps = append(ps, authz.AtLeast(authz.RoleOperator, ObjUpstream, authz.Write)...)
	ps = append(ps, authz.AtLeast(authz.RoleOperator, ObjUpstream, authz.Delete)...)
	return ps
}
