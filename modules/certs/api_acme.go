package certs

import (
	"net/http"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/orgs"
)

// acmeRequestFields are the ACME request's options beyond domain, provider and auto_renew.
type acmeRequestFields struct {
	SAN            []string          `json:"san,omitempty" doc:"ACME: more names on the certificate"`
	Challenge      string            `json:"challenge,omitempty" doc:"ACME: http-01 (default; a plain-HTTP virtual host must serve each name) or dns-01 (needed for wildcards)"`
	DNSProvider    string            `json:"dns_provider,omitempty" doc:"ACME dns-01: a lego DNS provider the master supports: cloudflare, digitalocean, gandiv5, godaddy, hetzner, httpreq, ovh, rfc2136 or route53"`
	DNSCredentials map[string]string `json:"dns_credentials,omitempty" doc:"ACME dns-01: the provider's lego environment variable names and values; stored encrypted, never returned"`
	KeyType        string            `json:"key_type,omitempty" doc:"ACME: ec256 (default), ec384, rsa2048 or rsa4096"`
	Profile        string            `json:"profile,omitempty" doc:"ACME: the issuer's certificate profile"`
}

// isACME tells an ACME request from an upload: an upload carries PEM.
func (r createCertificateRequest) isACME() bool {
	if strings.TrimSpace(r.CertificatePEM) != "" || strings.TrimSpace(r.PrivateKeyPEM) != "" {
		return false
	}
	return (r.Provider != "" && r.Provider != ProviderUpload) || r.Domain != ""
}

func (m *Module) requestCertificate(c *fiber.Ctx, req createCertificateRequest) error {
	cert, err := m.svc.Request(app.Ctx(c), RequestParams{
		WorkspaceID: app.ScopeOf(c).WorkspaceID, Domain: req.Domain, SAN: req.SAN, Provider: req.Provider, AutoRenew: req.AutoRenew,
		Challenge: req.Challenge, DNSProvider: req.DNSProvider, DNSCredentials: req.DNSCredentials, KeyType: req.KeyType,
		Profile: req.Profile, Name: req.Name,
	})
	if err != nil {
		return err
	}
	return c.Status(http.StatusAccepted).JSON(cert)
}

func (m *Module) bindACME(r *app.Router) {
	cert := ScopeCertificate(m.d.DB, "id")
	org := orgs.ScopeOrg(m.d.DB, "id")
	r.Get("/certificates/:id/attempts", app.Require(ObjCertificate, authz.Read, cert),
		app.Doc{Summary: "A certificate's issuance and renewal attempts, newest first", Response: Attempt{}, List: true},
		m.listAttempts)
	r.Post("/certificates/:id/renew", app.Require(ObjCertificate, authz.Write, cert),
		app.Doc{Summary: "Renew an ACME certificate now (or retry a failed issuance); 202", Response: Certificate{}, Status: http.StatusAccepted, ConfigVersion: true},
		m.renewCertificate)
	r.Patch("/certificates/:id", app.Require(ObjCertificate, authz.Write, cert),
		app.Doc{Summary: "Change a certificate's auto_renew or name", Body: UpdateParams{}, Response: Certificate{}, ConfigVersion: true},
		m.updateCertificate)
	r.Get("/organizations/:id/acme-settings", app.Require(ObjACMESettings, authz.Read, org),
		app.Doc{Summary: "The organization's ACME settings (the EAB HMAC is never returned)", Response: ACMESettings{}},
		m.getACMESettings)
	r.Put("/organizations/:id/acme-settings", app.Require(ObjACMESettings, authz.Write, org),
		app.Doc{Summary: "Set the organization's ACME settings: email, eab_kid, eab_hmac (write-only), directory_url (provider custom), fallback issuers", Body: ACMESettingsParams{}, Response: ACMESettings{}},
		m.putACMESettings)
}

func (m *Module) listAttempts(c *fiber.Ctx) error {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return ErrCertificateNotFound
	}
	list, err := m.svc.Attempts(app.Ctx(c), id)
	if err != nil {
		return err
	}
	return c.JSON(fiber.Map{"data": list})
}

func (m *Module) renewCertificate(c *fiber.Ctx) error {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return ErrCertificateNotFound
	}
	cert, err := m.svc.Renew(app.Ctx(c), id)
	if err != nil {
		return err
	}
	return c.Status(http.StatusAccepted).JSON(cert)
}

func (m *Module) updateCertificate(c *fiber.Ctx) error {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return ErrCertificateNotFound
	}
	var p UpdateParams
	if err := app.Bind(c, &p); err != nil {
		return err
	}
	cert, err := m.svc.Update(app.Ctx(c), id, p)
	if err != nil {
		return err
	}
	return c.JSON(cert)
}

func (m *Module) getACMESettings(c *fiber.Ctx) error {
	st, err := m.svc.GetACMESettings(app.Ctx(c), app.ScopeOf(c).OrgID)
	if err != nil {
		return err
	}
	return c.JSON(st)
}

func (m *Module) putACMESettings(c *fiber.Ctx) error {
	var p ACMESettingsParams
	if err := app.Bind(c, &p); err != nil {
		return err
	}
	st, err := m.svc.SetACMESettings(app.Ctx(c), app.ScopeOf(c).OrgID, p)
	if err != nil {
		return err
	}
	return c.JSON(st)
}
