package orgs

import (
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/auth"
)

// Casbin objects checked by this module's routes.
const (
	ObjOrganization = "orgs.organization"
	ObjWorkspace    = "orgs.workspace"
	ObjMember       = "orgs.member"
	ObjAudit        = "orgs.audit"
	// ObjAPIKey is the auth module's object; its management routes are mounted
	// here, next to the organization they belong to.
	ObjAPIKey = auth.ObjectAPIKey
)

// policies is the role matrix of the module:
//
//	object             read    write   delete
//	orgs.organization  viewer  admin   owner
//	orgs.workspace     viewer  admin   admin
//	orgs.member        viewer  admin   admin   (owner rules in Service; also invitations)
//	orgs.audit         viewer  -       -
//	auth.apikey        viewer  admin   admin   (owner keys by owners, in Service)
//
// A viewer reads everything in its organization (key hashes and secrets are never
// returned, so listing keys discloses only names, prefixes and scopes).
func policies() []authz.Policy {
	var ps []authz.Policy
	add := func(role, object, action string) { ps = append(ps, authz.AtLeast(role, object, action)...) }
	add(authz.RoleViewer, ObjOrganization, authz.Read)
	add(authz.RoleAdmin, ObjOrganization, authz.Write)
	add(authz.RoleOwner, ObjOrganization, authz.Delete)
	add(authz.RoleViewer, ObjWorkspace, authz.Read)
	add(authz.RoleAdmin, ObjWorkspace, authz.Write)
	add(authz.RoleAdmin, ObjWorkspace, authz.Delete)
	add(authz.RoleViewer, ObjMember, authz.Read)
	add(authz.RoleAdmin, ObjMember, authz.Write)
	add(authz.RoleAdmin, ObjMember, authz.Delete)
	add(authz.RoleViewer, ObjAudit, authz.Read)
	add(authz.RoleViewer, ObjAPIKey, authz.Read)
	add(authz.RoleAdmin, ObjAPIKey, authz.Write)
	add(authz.RoleAdmin, ObjAPIKey, authz.Delete)
	return ps
}
