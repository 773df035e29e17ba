package certs

import (
	"fmt"
	"io"
	"math"
	"mime/multipart"
	"net/http"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/orgs"
	"github.com/nxmesh/nxmesh/views"
)

// The admin pages of certificates, one tab of a workspace's configuration
// (views.WorkspaceSections):
//
//	GET  /workspaces/:id/certificates      the list, expiring ones highlighted
//	GET  /workspaces/:id/certificates/new  the upload form
//	POST /workspaces/:id/certificates      upload (multipart: pasted PEM or files)
//	GET  /certificates/:id                 the certificate's details
//	GET  /certificates/:id/delete          the confirmation step
//	POST /certificates/:id/delete          delete
//
// The ACME pages (request form, renewal, organization settings) are in
// ui_acme.go.
//
// No page shows key material: the service's Certificate has no field for it,
// and a failed upload renders the form again without the private key (it
// must be pasted or chosen again).

// pages holds the admin handlers: the service and the shared navigation and
// permission checks of the admin.
type pages struct {
	svc *Service
	ui  *app.Pages
}

// mountUI mounts the admin pages; Routes calls it with the UI router.
func (m *Module) mountUI(ui *app.Router) {
	p := &pages{svc: m.svc, ui: m.d.Pages}
	ws := orgs.ScopeWorkspace(m.d.DB, "id")
	cert := ScopeCertificate(m.d.DB, "id")
	ui.Get("/workspaces/:id/certificates", app.Require(ObjCertificate, authz.Read, ws),
		app.Doc{Summary: "Certificates page", Query: []string{"page", "per_page"}}, p.list)
	ui.Get("/workspaces/:id/certificates/new", app.Require(ObjCertificate, authz.Write, ws),
		app.Doc{Summary: "Certificate upload form"}, p.newForm)
	ui.Post("/workspaces/:id/certificates", app.Require(ObjCertificate, authz.Write, ws),
		app.Doc{Summary: "Upload a certificate (multipart form: PEM text or files)", ConfigVersion: true}, p.create)
	ui.Get("/certificates/:id", app.Require(ObjCertificate, authz.Read, cert),
		app.Doc{Summary: "Certificate page (never shows key material)"}, p.show)
	ui.Get("/certificates/:id/delete", app.Require(ObjCertificate, authz.Delete, cert),
		app.Doc{Summary: "Confirm the deletion of a certificate"}, p.confirmDelete)
	ui.Post("/certificates/:id/delete", app.Require(ObjCertificate, authz.Delete, cert),
		app.Doc{Summary: "Delete a certificate (form)", ConfigVersion: true}, p.delete)
	p.mountACME(ui, ws, cert, orgs.ScopeOrg(m.d.DB, "id"))
}

// ---- Helpers ----

func uiListPath(ws uuid.UUID) string   { return "/workspaces/" + ws.String() + "/certificates" }
func uiPath(id uuid.UUID) string       { return "/certificates/" + id.String() }
func uiDeletePath(id uuid.UUID) string { return uiPath(id) + "/delete" }

func uiDate(t *time.Time) string {
	if t == nil {
		return "—"
	}
	return t.UTC().Format("2006-01-02")
}

func uiWhen(t *time.Time) string {
	if t == nil {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

// uiLeft says how long until (or since) a certificate's expiry.
func uiLeft(expires *time.Time, now time.Time) string {
	if expires == nil {
		return ""
	}
	d := expires.Sub(now)
	days := int(math.Round(d.Abs().Hours() / 24))
	switch {
	case d < 0 && days == 0:
		return "expired today"
	case d < 0:
		return fmt.Sprintf("expired %d day%s ago", days, plural(days))
	case days == 0:
		return "expires today"
	}
	return fmt.Sprintf("in %d day%s", days, plural(days))
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// uiStatusLabel is a status as people read it.
func uiStatusLabel(status string) string {
	switch status {
	case StatusActive:
		return "Active"
	case StatusExpiring:
		return "Expiring"
	case StatusExpired:
		return "Expired"
	case StatusPending:
		return "Pending"
	case StatusFailed:
		return "Failed"
	}
	return status
}

// uiRowClass marks the table row of a certificate that needs attention.
func uiRowClass(status string) string {
	switch status {
	case StatusExpiring:
		return "cert-expiring"
	case StatusExpired, StatusFailed:
		return "cert-expired"
	}
	return ""
}

// ---- List and details ----

type listData struct {
	WorkspaceID  uuid.UUID
	Certificates []Certificate
	Pager        views.Pager
	// Filter is the search (q) and the state filter.
	Filter    views.Form
	Now       time.Time
	CanWrite  bool
	CanDelete bool
	// Expiring and Expired count the certificates of the page that need
	// attention.
	Expiring, Expired int
}

func (p *pages) list(c *fiber.Ctx) error {
	ws := app.ScopeOf(c).WorkspaceID
	page, err := app.ParsePage(c)
	if err != nil {
		return err
	}
	filter := views.SearchForm(c, "q", "state")
	status := http.StatusOK
	list, total, err := p.svc.Search(app.Ctx(c), ws, Filter{Q: filter.Value("q"), State: filter.Value("state")}, page)
	if err != nil {
		f, fstatus, ok := views.FormFromError(err, filter.Values, "q", "state")
		if !ok {
			return err
		}
		filter, status = f, fstatus
	}
	d := listData{
		WorkspaceID:  ws,
		Certificates: list,
		Pager:        views.NewPager(page, total, uiListPath(ws), filter.Query()),
		Filter:       filter,
		Now:          p.svc.now(),
		CanWrite:     p.ui.Allowed(c, ObjCertificate, authz.Write),
		CanDelete:    p.ui.Allowed(c, ObjCertificate, authz.Delete),
	}
	for _, cert := range list {
		switch cert.Status {
		case StatusExpiring:
			d.Expiring++
		case StatusExpired:
			d.Expired++
		}
	}
	if views.IsFragmentFor(c, uiListTarget) {
		return views.Render(c, status, certificateTable(d))
	}
	shell, err := p.ui.Shell(c, "Certificates", views.SectionCertificates)
	if err != nil {
		return err
	}
	return views.Page(c, status, shell, listPage(d))
}

// uiListTarget is the id of the list's table, which the search form
// replaces as the user types.
const uiListTarget = "certificate-list"

// certificate loads the certificate the route addresses.
func (p *pages) certificate(c *fiber.Ctx) (Certificate, error) {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return Certificate{}, ErrCertificateNotFound
	}
	return p.svc.Get(app.Ctx(c), id)
}

// ---- Upload ----

// Input names of the upload form. The text areas carry the service's field
// names, so its messages land under them; a chosen file replaces the text.
const (
	fName           = "name"
	fCertificatePEM = "certificate_pem"
	fPrivateKeyPEM  = "private_key_pem"
	fCertificateRaw = "certificate_file"
	fPrivateKeyRaw  = "private_key_file"
)

type formData struct {
	WorkspaceID uuid.UUID
	Form        views.Form
	CSRF        string
}

func (p *pages) newForm(c *fiber.Ctx) error {
	return p.renderForm(c, http.StatusOK, views.Form{})
}

func (p *pages) renderForm(c *fiber.Ctx, status int, form views.Form) error {
	shell, err := p.ui.Shell(c, "Upload a certificate", views.SectionCertificates)
	if err != nil {
		return err
	}
	return views.Page(c, status, shell, formPage(formData{WorkspaceID: app.ScopeOf(c).WorkspaceID, Form: form, CSRF: shell.CSRF}))
}

func (p *pages) create(c *fiber.Ctx) error {
	ws := app.ScopeOf(c).WorkspaceID
	vals := views.PostedValues(c)
	params := CreateParams{WorkspaceID: ws, Name: vals[fName], CertificatePEM: vals[fCertificatePEM], PrivateKeyPEM: vals[fPrivateKeyPEM]}
	v := &app.Validator{}
	if s, ok := uploadedFile(c, v, fCertificateRaw, fCertificatePEM); ok {
		params.CertificatePEM = s
	}
	if s, ok := uploadedFile(c, v, fPrivateKeyRaw, fPrivateKeyPEM); ok {
		params.PrivateKeyPEM = s
	}
	err := v.Err()
	if err == nil {
		var cert Certificate
		if cert, err = p.svc.Create(app.Ctx(c), params); err == nil {
			views.SetSavedFlash(c, ws, app.ConfigVersion(c), fmt.Sprintf("Certificate for %s uploaded.", cert.Domain))
			return views.SeeOther(c, uiPath(cert.ID))
		}
	}
	// The chain is public; the key is never echoed back into the page.
	kept := map[string]string{fName: vals[fName], fCertificatePEM: params.CertificatePEM}
	form, status, ok := views.FormFromError(err, kept, fName, fCertificatePEM, fPrivateKeyPEM)
	if !ok {
		return err
	}
	if form.Errors[fPrivateKeyPEM] == "" && (params.PrivateKeyPEM != "") {
		form.Errors[fPrivateKeyPEM] = "Paste or choose the private key again: it is not kept after a failed upload."
	}
	return p.renderForm(c, status, form)
}

// uploadedFile returns the content of the file chosen in input name, if any;
// a file too large or unreadable is an error at field.
func uploadedFile(c *fiber.Ctx, v *app.Validator, name, field string) (string, bool) {
	fh, err := c.FormFile(name)
	if err != nil || fh == nil || fh.Size == 0 {
		return "", false
	}
	if fh.Size > MaxBodyBytes {
		v.Add(field, app.FieldTooLong, fmt.Sprintf("the file must be at most %d KiB", MaxBodyBytes>>10))
		return "", false
	}
	s, err := readFile(fh)
	if !v.Check(err == nil, field, app.FieldInvalidValue, "the file could not be read") {
		return "", false
	}
	return s, true
}

func readFile(fh *multipart.FileHeader) (string, error) {
	f, err := fh.Open()
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxBodyBytes+1))
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// ---- Delete ----

func (p *pages) confirmDelete(c *fiber.Ctx) error {
	cert, err := p.certificate(c)
	if err != nil {
		return err
	}
	var form views.Form
	users, err := p.svc.users(app.Ctx(c), cert.ID)
	if err != nil {
		return err
	}
	if len(users) > 0 {
		form.Message = "This certificate is used by " + strings.Join(users, ", ") + "; it cannot be deleted until they stop using it."
	}
	return p.renderConfirm(c, http.StatusOK, cert, form)
}

func (p *pages) renderConfirm(c *fiber.Ctx, status int, cert Certificate, form views.Form) error {
	shell, err := p.ui.Shell(c, "Delete certificate", views.SectionCertificates)
	if err != nil {
		return err
	}
	return views.Page(c, status, shell, views.Confirm(views.ConfirmProps{
		Question: fmt.Sprintf("Delete the certificate %q (%s)?", cert.Name, cert.Domain),
		Details: []string{"Its chain and private key are erased from the master. Agents stop receiving it with the next " +
			"configuration version; a rollback does not bring it back."},
		Form:   form,
		Action: uiDeletePath(cert.ID),
		CSRF:   shell.CSRF,
		Button: "Delete certificate",
		Cancel: uiPath(cert.ID),
	}))
}

func (p *pages) delete(c *fiber.Ctx) error {
	cert, err := p.certificate(c)
	if err != nil {
		return err
	}
	if err := p.svc.Delete(app.Ctx(c), cert.ID); err != nil {
		form, status, ok := views.FormFromError(err, nil)
		if !ok {
			return err
		}
		return p.renderConfirm(c, status, cert, form)
	}
	views.SetSavedFlash(c, cert.WorkspaceID, app.ConfigVersion(c), fmt.Sprintf("Certificate %q deleted.", cert.Name))
	return views.SeeOther(c, uiListPath(cert.WorkspaceID))
}
