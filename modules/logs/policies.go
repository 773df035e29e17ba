package logs

import "github.com/nxmesh/nxmesh/app/authz"

// Casbin objects checked by this module's routes.
const (
	// ObjLog is the stored and live access-log and error-log lines.
	ObjLog = "logs.log"
	// ObjSettings is a workspace's log settings (its retention).
	ObjSettings = "logs.settings"
)

// policies is the role matrix of the module:
//
//	object         read    write
//	logs.log       viewer  -
//	logs.settings  viewer  admin
func policies() []authz.Policy {
	var ps []authz.Policy
	ps = append(ps, authz.AtLeast(authz.RoleViewer, ObjLog, authz.Read)...)
	ps = append(ps, authz.AtLeast(authz.RoleViewer, ObjSettings, authz.Read)...)
	ps = append(ps, authz.AtLeast(authz.RoleAdmin, ObjSettings, authz.Write)...)
	return ps
}
