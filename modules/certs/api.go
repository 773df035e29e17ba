package certs

import (
	"net/http"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/orgs"
)

// MaxBodyBytes bounds a create request, whatever http.body_limit allows.
const MaxBodyBytes = 1 << 20

// createCertificateRequest is an upload (certificate_pem, private_key_pem,
// name) or the ACME request (domain, provider, auto_renew), which is
// refused until ACME issuance exists.
type createCertificateRequest struct {
	CertificatePEM string `json:"certificate_pem,omitempty" doc:"The chain as PEM CERTIFICATE blocks: the leaf first, then each issuing certificate in order"`
	PrivateKeyPEM  string `json:"private_key_pem,omitempty" doc:"The leaf's unencrypted private key as one PEM block (PKCS#1, PKCS#8 or SEC 1): RSA of 2048 bits or more, ECDSA P-256/P-384 or Ed25519. Stored encrypted, never returned"`
	Name           string `json:"name,omitempty" doc:"A label; the certificate's domain when omitted"`
	Domain         string `json:"domain,omitempty" doc:"The name an ACME request is for (required there). On an upload it may be omitted or must equal the leaf's domain"`
	Provider       string `json:"provider,omitempty" doc:"\"upload\" or omitted. ACME providers are refused with 422 until ACME issuance is enabled"`
	AutoRenew      bool   `json:"auto_renew,omitempty" doc:"ACME requests only; must be false for uploads"`
	acmeRequestFields
}

func (m *Module) bindCertificates(r *app.Router) {
	ws := orgs.ScopeWorkspace(m.d.DB, "id")
	cert := ScopeCertificate(m.d.DB, "id")
	r.Get("/workspaces/:id/certificates", app.Require(ObjCertificate, authz.Read, ws),
		app.Doc{Summary: "List a workspace's certificates, oldest first (page, per_page; per_page is capped at 100); q matches a part of the name, the domain or a subjectAltName (ignoring case); state is active, expiring, expired, pending or failed, as of the request", Response: Certificate{}, List: true, Query: []string{"q", "state"}},
		app.ListHandler(m.listCertificates))
	r.Post("/workspaces/:id/certificates", app.Require(ObjCertificate, authz.Write, ws),
		app.Doc{
			Summary: "Upload a certificate: certificate_pem holds the chain (leaf first, then each issuer), private_key_pem the leaf's key (RSA of 2048 bits or more, ECDSA P-256/P-384 or Ed25519). " +
				"The key is stored encrypted and never returned. An ACME request (domain, provider letsencrypt/letsencrypt_staging/zerossl/custom, auto_renew, optional san, challenge, dns_provider, dns_credentials, key_type, profile) answers 202 with the certificate pending",
			Body: createCertificateRequest{}, Response: Certificate{}, Status: http.StatusCreated, ConfigVersion: true,
		},
		m.createCertificate)
	r.Get("/certificates/:id", app.Require(ObjCertificate, authz.Read, cert),
		app.Doc{Summary: "Get a certificate (without its private key)", Response: Certificate{}},
		m.getCertificate)
	r.Delete("/certificates/:id", app.Require(ObjCertificate, authz.Delete, cert),
		app.Doc{Summary: "Delete a certificate; 409 while virtual hosts or streams use it", Status: http.StatusNoContent, ConfigVersion: true},
		m.deleteCertificate)
	m.bindACME(r)
}

func (m *Module) listCertificates(c *fiber.Ctx, page app.Page) ([]Certificate, int64, error) {
	return m.svc.Search(app.Ctx(c), app.ScopeOf(c).WorkspaceID, Filter{Q: strings.TrimSpace(c.Query("q")), State: c.Query("state")}, page)
}

func (m *Module) createCertificate(c *fiber.Ctx) error {
	if len(c.Body()) > MaxBodyBytes {
		return &app.HTTPError{Status: http.StatusRequestEntityTooLarge, Code: app.CodePayloadTooLarge, Message: "Request body too large (at most 1 MiB)"}
	}
	var req createCertificateRequest
	if err := app.Bind(c, &req); err != nil {
		return err
	}
	if req.isACME() {
		return m.requestCertificate(c, req)
	}
	cert, err := m.svc.Create(app.Ctx(c), CreateParams{
		WorkspaceID:    app.ScopeOf(c).WorkspaceID,
		Name:           req.Name,
		CertificatePEM: req.CertificatePEM,
		PrivateKeyPEM:  req.PrivateKeyPEM,
		Domain:         req.Domain,
		Provider:       req.Provider,
		AutoRenew:      req.AutoRenew,
	})
	if err != nil {
		return err
	}
	return c.Status(http.StatusCreated).JSON(cert)
}

func (m *Module) getCertificate(c *fiber.Ctx) error {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return ErrCertificateNotFound
	}
	cert, err := m.svc.Get(app.Ctx(c), id)
	if err != nil {
		return err
	}
	return c.JSON(cert)
}

func (m *Module) deleteCertificate(c *fiber.Ctx) error {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return ErrCertificateNotFound
	}
	if err := m.svc.Delete(app.Ctx(c), id); err != nil {
		return err
	}
	return c.SendStatus(http.StatusNoContent)
}
