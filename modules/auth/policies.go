package auth

import "github.com/nxmesh/nxmesh/app/authz"

// policies lets every member see, and admins and owners manage, their organization's API keys
// (ObjectAPIKey; the routes are mounted by the orgs module). User management is
// for superadmins and is checked in the handlers; everything else in auth acts
// on the caller's own identity.
func policies() []authz.Policy {
	var ps []authz.Policy
	ps = append(ps, authz.AtLeast(authz.RoleViewer, ObjectAPIKey, authz.Read)...)
	for _, action := range []string{authz.Write, authz.Delete} {
		ps = append(ps, authz.AtLeast(authz.RoleAdmin, ObjectAPIKey, action)...)
	}
	return ps
}
