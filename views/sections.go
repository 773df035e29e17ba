package views

import "github.com/google/uuid"

// Sections of a workspace's pages (the upstreams, certs, vhosts and agents
// modules), as passed to WorkspaceSections to mark the current one.
const (
	SectionVirtualHosts = "virtual-hosts"
	SectionUpstreams    = "upstreams"
	SectionStreams      = "streams"
	SectionCertificates = "certificates"
	SectionConfig       = "config"
	SectionAgents       = "agents"
	SectionLogs         = "logs"
)

// WorkspaceSections are the tabs of a workspace's pages, with
// active marked current. Every member of a workspace may read all of them.
func WorkspaceSections(workspaceID uuid.UUID, active string) []Link {
	base := "/workspaces/" + workspaceID.String()
	return []Link{
		{Label: "Virtual hosts", Href: base + "/virtual-hosts", Active: active == SectionVirtualHosts},
		{Label: "Upstreams", Href: base + "/upstreams", Active: active == SectionUpstreams},
		{Label: "Streams", Href: base + "/streams", Active: active == SectionStreams},
		{Label: "Certificates", Href: base + "/certificates", Active: active == SectionCertificates},
		{Label: "Config history", Href: base + "/config/versions", Active: active == SectionConfig},
		{Label: "Agents", Href: base + "/agents", Active: active == SectionAgents},
		{Label: "Logs", Href: base + "/logs", Active: active == SectionLogs},
	}
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
