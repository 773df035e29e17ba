package vhosts

import (
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/modules/upstreams"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// VirtualHostToProto converts a virtual host to its ConfigUpdate form. hashes
// are the basic-auth users' password hashes by user name. An exact-match
// location becomes the path "= /path", the renderer's modifier syntax.
func VirtualHostToProto(v VirtualHost, hashes map[string]string) *agentv1.VirtualHost {
	out := &agentv1.VirtualHost{
		Id:                         v.ID.String(),
		Name:                       v.Name,
		ServerName:                 v.ServerName,
		ListenPort:                 uint32(max(v.ListenPort, 0)),
		HttpPort:                   uint32(max(v.HTTPPort, 0)),
		SslEnabled:                 v.SSLEnabled,
		Http2Enabled:               v.HTTP2Enabled,
		Locations:                  make([]*agentv1.Location, 0, len(v.Locations)),
		CustomDirectives:           map[string]string{},
		RedirectHttps:              v.RedirectHTTPS,
		DefaultServer:              v.DefaultServer,
		RedirectTo:                 v.RedirectTo,
		RedirectCode:               uint32(max(v.RedirectCode, 0)),
		ClientMaxBodySize:          v.ClientMaxBodySize,
		ProxyConnectTimeoutSeconds: uint32(max(seconds(v.ProxyConnectTimeout), 0)),
		ProxyReadTimeoutSeconds:    uint32(max(seconds(v.ProxyReadTimeout), 0)),
		ProxySendTimeoutSeconds:    uint32(max(seconds(v.ProxySendTimeout), 0)),
	}
	if v.SSLCertificateID != nil {
		out.SslCertificateId = v.SSLCertificateID.String()
	}
	for name, value := range v.CustomDirectives {
		out.CustomDirectives[name] = value
	}
	for _, l := range v.Locations {
		out.Locations = append(out.Locations, locationToProto(l))
	}
	if al := v.AccessList; al != nil {
		pa := &agentv1.AccessList{
			Allow: slices.Clone(al.Allow),
			Deny:  slices.Clone(al.Deny),
			Realm: al.Realm,
		}
		for _, u := range al.BasicAuthUsers {
			pa.BasicAuthUsers = append(pa.BasicAuthUsers, &agentv1.BasicAuthUser{Username: u.Username, PasswordHash: hashes[u.Username]})
		}
		out.AccessList = pa
	}
	if rl := v.RateLimit; rl != nil {
		out.RateLimit = &agentv1.RateLimit{
			RequestsPerSecond: uint32(max(rl.RequestsPerSecond, 0)),
			Burst:             uint32(max(rl.Burst, 0)),
		}
	}
	return out
}

func locationToProto(l Location) *agentv1.Location {
	path := l.Path
	if l.Match == MatchExact {
		path = "= " + path
	}
	out := &agentv1.Location{
		Path:       path,
		ProxyPass:  l.ProxyPass,
		UpstreamId: l.UpstreamID,
		Root:       l.Root,
		Index:      l.Index,
		Websocket:  l.Websocket,
	}
	for _, h := range l.CustomHeaders {
		out.CustomHeaders = append(out.CustomHeaders, &agentv1.Header{Name: h.Name, Value: h.Value, Always: h.Always})
	}
	for _, r := range l.RewriteRules {
		out.RewriteRules = append(out.RewriteRules, &agentv1.RewriteRule{Pattern: r.Pattern, Replacement: r.Replacement, Flag: r.Flag})
	}
	return out
}

// StreamToProto converts a stream to its ConfigUpdate form.
func StreamToProto(s Stream) *agentv1.Stream {
	out := &agentv1.Stream{
		Id:                    s.ID.String(),
		Name:                  s.Name,
		ListenPort:            uint32(max(s.ListenPort, 0)),
		Protocol:              agentv1.StreamProtocol_TCP,
		UpstreamId:            s.UpstreamID.String(),
		SslEnabled:            s.SSLEnabled,
		ProxyProtocol:         s.ProxyProtocol,
		AcceptProxyProtocol:   s.AcceptProxyProtocol,
		ConnectTimeoutSeconds: uint32(max(seconds(s.ConnectTimeout), 0)),
		TimeoutSeconds:        uint32(max(seconds(s.Timeout), 0)),
		BandwidthLimit:        s.BandwidthLimit,
	}
	if s.Protocol == ProtocolUDP {
		out.Protocol = agentv1.StreamProtocol_UDP
	}
	if s.SSLCertificateID != nil {
		out.SslCertificateId = s.SSLCertificateID.String()
	}
	return out
}

// certificateRefToProto is a certificate without material: the master never
// puts private keys into snapshots; the agents' hub adds the material (certs
// Service.Material) before sending.
func certificateRefToProto(c CertificateRef) *agentv1.Certificate {
	out := &agentv1.Certificate{Id: c.ID.String(), Domain: c.Domain}
	if c.ExpiresAt != nil {
		out.ExpiresAt = c.ExpiresAt.Unix()
	}
	return out
}

// configUpdate builds the ConfigUpdate of a stored snapshot for the objects
// that include accepts (nil: all), with the upstreams and certificate
// references they use. Certificates carry no material.
func (snap storedSnapshot) configUpdate(workspaceID uuid.UUID, version int64, include func(TargetAgents) bool) *agentv1.ConfigUpdate {
	u := &agentv1.ConfigUpdate{
		ConfigId:     fmt.Sprintf("%s:%d", workspaceID, version),
		Version:      version,
		Certificates: map[string]*agentv1.Certificate{},
	}
	usedUpstreams := map[string]bool{}
	usedCerts := map[string]bool{}
	for _, vh := range snap.VirtualHosts {
		if include != nil && !include(vh.TargetAgents) {
			continue
		}
		u.VirtualHosts = append(u.VirtualHosts, VirtualHostToProto(vh, snap.PasswordHashes[vh.ID.String()]))
		if vh.SSLEnabled && vh.SSLCertificateID != nil {
			usedCerts[vh.SSLCertificateID.String()] = true
		}
		if vh.RedirectTo == "" {
			for _, l := range vh.Locations {
				if l.UpstreamID != "" {
					usedUpstreams[l.UpstreamID] = true
				}
			}
		}
	}
	for _, st := range snap.Streams {
		if include != nil && !include(st.TargetAgents) {
			continue
		}
		u.Streams = append(u.Streams, StreamToProto(st))
		usedUpstreams[st.UpstreamID.String()] = true
		if st.SSLEnabled && st.SSLCertificateID != nil {
			usedCerts[st.SSLCertificateID.String()] = true
		}
	}
	for _, up := range snap.Upstreams {
		if usedUpstreams[up.ID.String()] {
			u.Upstreams = append(u.Upstreams, upstreams.ToProto(up))
		}
	}
	for _, c := range snap.Certificates {
		if usedCerts[c.ID.String()] {
			u.Certificates[c.ID.String()] = certificateRefToProto(c)
		}
	}
	return u
}

// placeholderPEM stands in for certificate material when the master renders
// a configuration for people (previews, versions, diffs): the files under
// certs/ are never shown, only the paths the configuration refers to.
func placeholderPEM(kind, id string) string {
	return fmt.Sprintf("-----BEGIN %s-----\n%s\n-----END %s-----\n", kind, strings.ReplaceAll(id, "-", ""), kind)
}
