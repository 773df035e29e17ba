package certs

import "github.com/nxmesh/nxmesh/app/authz"

// ObjCertificate is the Casbin object checked by this module's routes.
const ObjCertificate = "certs.certificate"

// policies is the role matrix of the module:
//
//	object             read    write     delete
//	certs.certificate  viewer  operator  operator
func policies() []authz.Policy {
	var ps []authz.Policy
	ps = append(ps, authz.AtLeast(authz.RoleViewer, ObjCertificate, authz.Read)...)
	ps = append(ps, authz.AtLeast(authz.RoleOperator, ObjCertificate, authz.Write)...)
	ps = append(ps, authz.AtLeast(authz.RoleOperator, ObjCertificate, authz.Delete)...)
	ps = append(ps, authz.AtLeast(authz.RoleViewer, ObjACMESettings, authz.Read)...)
	ps = append(ps, authz.AtLeast(authz.RoleAdmin, ObjACMESettings, authz.Write)...)
	return ps
}

// ObjACMESettings is an organization's ACME settings: viewers read, admins write.
const ObjACMESettings = "certs.acme_settings"
