package vhosts

import "github.com/nxmesh/nxmesh/app/authz"

// Casbin objects checked by this module's routes.
const (
	ObjVirtualHost = "vhosts.vhost"
	ObjStream      = "vhosts.stream"
	// ObjConfig is a workspace's configuration history: versions, diffs and
	// rollback.
	ObjConfig = "vhosts.config"
)

// policies is the role matrix of the module:
//
//	object         read    write     delete
//	vhosts.vhost   viewer  operator  operator
//	vhosts.stream  viewer  operator  operator
//	vhosts.config  viewer  operator  -         (write = rollback)
func policies() []authz.Policy {
	var ps []authz.Policy
	add := func(role, object, action string) { ps = append(ps, authz.AtLeast(role, object, action)...) }
	for _, obj := range []string{ObjVirtualHost, ObjStream} {
		add(authz.RoleViewer, obj, authz.Read)
		add(authz.RoleOperator, obj, authz.Write)
		add(authz.RoleOperator, obj, authz.Delete)
	}
	add(authz.RoleViewer, ObjConfig, authz.Read)
	add(authz.RoleOperator, ObjConfig, authz.Write)
	return ps
}
