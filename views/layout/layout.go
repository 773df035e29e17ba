// Package layout holds the data of the frame around every signed-in admin page:
// the shell (title, user, CSRF token, navigation, flash message) and its links.
// It imports nothing of the master, so the plumbing (app.Pages builds shells)
// and the templates (package views, which re-exports these types) share it.
package layout

// Shell is what every signed-in page has around its content.
type Shell struct {
	// Title is the page's heading and document title.
	Title string
	// User is the signed-in user's e-mail address.
	User string
	// CSRF is the session's token; forms send it as _csrf, htmx as X-CSRF-Token.
	CSRF string
	// Nav is the navigation: switchers and the sections of the current scope.
	Nav Nav
	// Flash is a message to show above the content (set by Page from the flash
	// cookie when empty).
	Flash *Flash
}

// Nav is the navigation bar: the organization switcher, the workspace switcher
// of the current organization and the section tabs.
type Nav struct {
	// Orgs are the organizations the user may switch to.
	Orgs []Link
	// Org is the current organization, nil outside one.
	Org *Link
	// Workspaces are the current organization's workspaces.
	Workspaces []Link
	// Workspace is the current workspace, nil outside one.
	Workspace *Link
	// Sections are the tabs of the current organization or workspace.
	Sections []Link
	// AllOrgs links to the organizations page.
	AllOrgs string
}

// Link is a labelled target in the navigation.
type Link struct {
	Label  string
	Href   string
	Active bool
}

// FlashKind selects a flash message's colour.
type FlashKind string

// Flash kinds.
const (
	FlashSuccess FlashKind = "success"
	FlashError   FlashKind = "error"
	FlashInfo    FlashKind = "info"
)

// Flash is a one-time message shown at the top of the next page.
type Flash struct {
	Kind    FlashKind
	Message string
	// Rollout is the path of a fragment loaded under the message: the
	// rollout of the configuration version the change created, live.
	Rollout string
}

// AddSections appends links to the shell's section tabs. A link whose target is
// already a tab is not repeated; it only marks that tab current when the link
// is.
func (s *Shell) AddSections(links []Link) {
	for _, l := range links {
		found := false
		for i := range s.Nav.Sections {
			if s.Nav.Sections[i].Href == l.Href {
				s.Nav.Sections[i].Active = s.Nav.Sections[i].Active || l.Active
				found = true
				break
			}
		}
		if !found {
			s.Nav.Sections = append(s.Nav.Sections, l)
		}
	}
}
