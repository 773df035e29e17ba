package views

import "github.com/google/uuid"

// Sections of a workspace's pages (the upstreams, certs, vhosts, agents, logs
// and metrics modules), as passed to WorkspaceSections to mark the current one.
const (
	SectionVirtualHosts = "virtual-hosts"
	SectionUpstreams    = "upstreams"
	SectionStreams      = "streams"
	SectionCertificates = "certificates"
	SectionConfig       = "config"
	SectionAgents       = "agents"
	SectionLogs         = "logs"
	SectionMetrics      = "metrics"
	SectionAlerts       = "alerts"
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
		{Label: "Metrics", Href: base + "/metrics", Active: active == SectionMetrics},
		{Label: "Alerts", Href: base + "/alerts", Active: active == SectionAlerts},
	}
}
