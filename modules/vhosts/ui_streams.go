package vhosts

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/views"
)

// The stream pages and their form: list, create and edit form, preview and
// delete.

// Input names of the stream form.
const (
	fProtocol       = "protocol"
	fUpstream       = "upstream_id"
	fProxyProtocol  = "proxy_protocol"
	fAcceptProxy    = "accept_proxy_protocol"
	fStreamConnect  = "connect_timeout"
	fStreamTimeout  = "timeout"
	fBandwidthLimit = "bandwidth_limit"
)

var uiProtocols = []views.Option{{Value: ProtocolTCP, Label: "TCP"}, {Value: ProtocolUDP, Label: "UDP"}}

// streamForm is the stream form as typed.
type streamForm struct {
	Name, ListenPort, Protocol, Upstream string
	SSL                                  bool
	Certificate                          string
	ProxyProtocol, AcceptProxy           bool
	ConnectTimeout, Timeout, Bandwidth   string
	Target                               targetForm
}

func newStreamForm() streamForm {
	return streamForm{Protocol: ProtocolTCP, Target: targetForm{Type: TargetAll}}
}

func streamFormOf(s Stream) streamForm {
	f := streamForm{
		Name: s.Name, ListenPort: strconv.Itoa(s.ListenPort), Protocol: s.Protocol, Upstream: s.UpstreamID.String(),
		SSL: s.SSLEnabled, ProxyProtocol: s.ProxyProtocol, AcceptProxy: s.AcceptProxyProtocol,
		ConnectTimeout: views.IntValue(s.ConnectTimeout), Timeout: views.IntValue(s.Timeout), Bandwidth: s.BandwidthLimit,
		Target: targetFormOf(s.TargetAgents),
	}
	if s.SSLCertificateID != nil {
		f.Certificate = s.SSLCertificateID.String()
	}
	return f
}

func readStreamForm(vals map[string]string) streamForm {
	return streamForm{
		Name: vals[fName], ListenPort: vals[fListenPort], Protocol: vals[fProtocol], Upstream: vals[fUpstream],
		SSL: views.Checked(vals, fSSL), Certificate: vals[fCertificate],
		ProxyProtocol: views.Checked(vals, fProxyProtocol), AcceptProxy: views.Checked(vals, fAcceptProxy),
		ConnectTimeout: vals[fStreamConnect], Timeout: vals[fStreamTimeout], Bandwidth: vals[fBandwidthLimit],
		Target: readTargetForm(vals),
	}
}

func (f streamForm) values() map[string]string {
	v := map[string]string{
		fName: f.Name, fListenPort: f.ListenPort, fProtocol: f.Protocol, fUpstream: f.Upstream,
		fSSL: views.CheckedValue(f.SSL), fCertificate: f.Certificate,
		fProxyProtocol: views.CheckedValue(f.ProxyProtocol), fAcceptProxy: views.CheckedValue(f.AcceptProxy),
		fStreamConnect: f.ConnectTimeout, fStreamTimeout: f.Timeout, fBandwidthLimit: f.Bandwidth,
	}
	f.Target.values(v)
	return v
}

// apply sets every field of in from the form.
func (f streamForm) apply(in *StreamInput) error {
	v := &app.Validator{}
	in.Name = f.Name
	in.ListenPort = 0
	if port := views.OptionalInt(v, fListenPort, f.ListenPort); port != nil {
		in.ListenPort = *port
	}
	in.Protocol = f.Protocol
	in.UpstreamID = f.Upstream
	in.SSLEnabled = f.SSL
	in.SSLCertificateID = ""
	if f.SSL {
		in.SSLCertificateID = f.Certificate
	}
	in.ProxyProtocol, in.AcceptProxyProtocol = f.ProxyProtocol, f.AcceptProxy
	in.ConnectTimeout = views.OptionalInt(v, fStreamConnect, f.ConnectTimeout)
	in.Timeout = views.OptionalInt(v, fStreamTimeout, f.Timeout)
	in.BandwidthLimit = strings.TrimSpace(f.Bandwidth)
	in.TargetAgents = f.Target.targetAgents()
	return v.Err()
}

type streamListData struct {
	WorkspaceID uuid.UUID
	Streams     []Stream
	Upstreams   []views.Option
	Pager       views.Pager
	// Filter is the search (q).
	Filter    views.Form
	CanWrite  bool
	CanDelete bool
}

func (p *pages) streamList(c *fiber.Ctx) error {
	ctx, ws := app.Ctx(c), app.ScopeOf(c).WorkspaceID
	page, err := app.ParsePage(c)
	if err != nil {
		return err
	}
	filter := views.SearchForm(c, "q")
	status := http.StatusOK
	list, total, err := p.svc.SearchStreams(ctx, ws, ListFilter{Q: filter.Value("q")}, page)
	if err != nil {
		f, fstatus, ok := views.FormFromError(err, filter.Values, "q")
		if !ok {
			return err
		}
		filter, status = f, fstatus
	}
	ups, err := p.upstreamOptions(ctx, ws)
	if err != nil {
		return err
	}
	d := streamListData{
		WorkspaceID: ws,
		Streams:     list,
		Upstreams:   ups,
		Pager:       views.NewPager(page, total, uiWorkspacePath(ws, "/streams"), filter.Query()),
		Filter:      filter,
		CanWrite:    p.ui.Allowed(c, ObjStream, authz.Write),
		CanDelete:   p.ui.Allowed(c, ObjStream, authz.Delete),
	}
	if views.IsFragmentFor(c, uiStreamListTarget) {
		return views.Render(c, status, streamTable(d))
	}
	shell, err := p.ui.Shell(c, "Streams", views.SectionStreams)
	if err != nil {
		return err
	}
	return views.Page(c, status, shell, streamListPage(d))
}

// uiStreamListTarget is the id of the list's table, which the search form
// replaces as the user types.
const uiStreamListTarget = "stream-list"

type streamFormData struct {
	WorkspaceID  uuid.UUID
	Stream       *Stream
	Form         views.Form
	Upstreams    []views.Option
	Certificates []views.Option
	CSRF         string
	CanWrite     bool
	CanDelete    bool
}

func (d streamFormData) action() string {
	if d.Stream != nil {
		return uiStreamPath(d.Stream.ID)
	}
	return uiWorkspacePath(d.WorkspaceID, "/streams")
}

func (p *pages) renderStream(c *fiber.Ctx, status int, st *Stream, form views.Form) error {
	ctx, ws := app.Ctx(c), app.ScopeOf(c).WorkspaceID
	title := "New stream"
	if st != nil {
		title = st.Name
	}
	shell, err := p.ui.Shell(c, title, views.SectionStreams)
	if err != nil {
		return err
	}
	ups, err := p.upstreamOptions(ctx, ws)
	if err != nil {
		return err
	}
	certOpts, err := p.certificateOptions(ctx, ws)
	if err != nil {
		return err
	}
	return views.Page(c, status, shell, streamPage(streamFormData{
		WorkspaceID:  ws,
		Stream:       st,
		Form:         form,
		Upstreams:    ups,
		Certificates: certOpts,
		CSRF:         shell.CSRF,
		CanWrite:     p.ui.Allowed(c, ObjStream, authz.Write),
		CanDelete:    st != nil && p.ui.Allowed(c, ObjStream, authz.Delete),
	}))
}

func (p *pages) streamFailed(c *fiber.Ctx, st *Stream, f streamForm, err error) error {
	vals := f.values()
	form, status, ok := formFromError(err, vals, formFields(vals, "target_agents"))
	if !ok {
		return err
	}
	return p.renderStream(c, status, st, form)
}

func (p *pages) streamNew(c *fiber.Ctx) error {
	return p.renderStream(c, http.StatusOK, nil, views.Form{Values: newStreamForm().values()})
}

func (p *pages) streamCreate(c *fiber.Ctx) error {
	ws := app.ScopeOf(c).WorkspaceID
	f := readStreamForm(views.PostedValues(c))
	var in StreamInput
	err := f.apply(&in)
	if err == nil {
		var st Stream
		if st, err = p.svc.CreateStream(app.Ctx(c), ws, in); err == nil {
			views.SetSavedFlash(c, ws, app.ConfigVersion(c), fmt.Sprintf("Stream %q created.", st.Name))
			return views.SeeOther(c, uiStreamPath(st.ID))
		}
	}
	return p.streamFailed(c, nil, f, err)
}

// stream loads the stream the route addresses.
func (p *pages) stream(c *fiber.Ctx) (Stream, error) {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return Stream{}, ErrStreamNotFound
	}
	return p.svc.GetStream(app.Ctx(c), id)
}

func (p *pages) streamShow(c *fiber.Ctx) error {
	st, err := p.stream(c)
	if err != nil {
		return err
	}
	return p.renderStream(c, http.StatusOK, &st, views.Form{Values: streamFormOf(st).values()})
}

func (p *pages) streamUpdate(c *fiber.Ctx) error {
	st, err := p.stream(c)
	if err != nil {
		return err
	}
	f := readStreamForm(views.PostedValues(c))
	saved, err := p.svc.UpdateStream(app.Ctx(c), st.ID, f.apply)
	if err != nil {
		return p.streamFailed(c, &st, f, err)
	}
	views.SetSavedFlash(c, saved.WorkspaceID, app.ConfigVersion(c), fmt.Sprintf("Stream %q saved.", saved.Name))
	return views.SeeOther(c, uiStreamPath(saved.ID))
}

func (p *pages) streamPreview(c *fiber.Ctx) error {
	st, err := p.stream(c)
	if err != nil {
		return err
	}
	pv, err := p.svc.PreviewStream(app.Ctx(c), st.ID)
	if err != nil {
		return err
	}
	return p.sendPreviewPage(c, "Preview of "+st.Name, views.SectionStreams, previewOf(pv, uiStreamPath(st.ID)))
}

func (p *pages) streamConfirmDelete(c *fiber.Ctx) error {
	st, err := p.stream(c)
	if err != nil {
		return err
	}
	return p.renderConfirm(c, http.StatusOK, views.SectionStreams, views.ConfirmProps{
		Question: fmt.Sprintf("Delete stream %q?", st.Name),
		Details: []string{fmt.Sprintf("Agents stop listening on %d/%s with the next configuration version. "+
			"The change can be rolled back from the configuration history.", st.ListenPort, st.Protocol)},
		Action: uiStreamPath(st.ID) + "/delete",
		Button: "Delete stream",
		Cancel: uiStreamPath(st.ID),
	})
}

func (p *pages) streamDelete(c *fiber.Ctx) error {
	st, err := p.stream(c)
	if err != nil {
		return err
	}
	if err := p.svc.DeleteStream(app.Ctx(c), st.ID); err != nil {
		return err
	}
	views.SetSavedFlash(c, st.WorkspaceID, app.ConfigVersion(c), fmt.Sprintf("Stream %q deleted.", st.Name))
	return views.SeeOther(c, uiWorkspacePath(st.WorkspaceID, "/streams"))
}
