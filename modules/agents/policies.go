package agents

import "github.com/nxmesh/nxmesh/app/authz"

// Casbin objects checked by this module's routes.
const (
	// ObjAgent is an agent: listing, reading, registration tokens, renaming,
	// relabelling, deleting.
	ObjAgent = "agents.agent"
	// ObjCommand is a command sent to an agent (reload, restart, stop, ...).
	ObjCommand = "agents.command"
	// ObjRegistrationPolicy is a workspace's registration ACL.
	ObjRegistrationPolicy = "agents.registration_policy"
)

// policies is the role matrix of the module:
//
//	object                       read    write     delete
//	agents.agent                 viewer  admin     admin
//	agents.command               viewer  operator  -
//	agents.registration_policy   viewer  admin     -
//
// Operators reload agents (SPEC section 2); tokens, labels and deletion are
// admin work, like the registration ACL.
func policies() []authz.Policy {
	var ps []authz.Policy
	add := func(role, object, action string) { ps = append(ps, authz.AtLeast(role, object, action)...) }
	add(authz.RoleViewer, ObjAgent, authz.Read)
	add(authz.RoleAdmin, ObjAgent, authz.Write)
	add(authz.RoleAdmin, ObjAgent, authz.Delete)
	add(authz.RoleViewer, ObjCommand, authz.Read)
	add(authz.RoleOperator, ObjCommand, authz.Write)
	add(authz.RoleViewer, ObjRegistrationPolicy, authz.Read)
	add(authz.RoleAdmin, ObjRegistrationPolicy, authz.Write)
	return ps
}
