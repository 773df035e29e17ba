package render

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"

	crossplane "github.com/nginxinc/nginx-go-crossplane"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// streamConf builds the tree of stream.conf.
func (r *renderer) streamConf(u *agentv1.ConfigUpdate) crossplane.Directives {
	tree := crossplane.Directives{headerComment()}
	streams := slices.Clone(u.GetStreams())
	slices.SortStableFunc(streams, func(a, b *agentv1.Stream) int {
		return cmp.Or(
			cmp.Compare(a.GetListenPort(), b.GetListenPort()),
			cmp.Compare(a.GetProtocol(), b.GetProtocol()),
			cmp.Compare(a.GetId(), b.GetId()),
		)
	})
	used := map[string]*agentv1.Upstream{}
	for _, s := range streams {
		field := fmt.Sprintf("streams[id=%s].upstream_id", s.GetId())
		if s.GetUpstreamId() == "" {
			r.fail(field, "is empty")
			continue
		}
		if up := r.upstream(field, s.GetUpstreamId()); up != nil {
			used[s.GetUpstreamId()] = up
		}
	}
	if r.err != nil {
		return nil
	}
	if r.opts.AccessLog != "" && len(streams) > 0 {
		// Streams are unique by (protocol, port): the map names each
		// session's stream.
		ids := crossplane.Directives{dir("default", "")}
		for _, s := range streams {
			proto := "TCP"
			if s.GetProtocol() == agentv1.StreamProtocol_UDP {
				proto = "UDP"
			}
			ids = append(ids, dir(proto+":"+strconv.FormatUint(uint64(s.GetListenPort()), 10), s.GetId()))
		}
		tree = append(tree, block("map", []string{"$protocol:$server_port", streamIDVar}, ids), streamLogFormat())
	}
	for _, id := range sortedKeys(used) {
		tree = append(tree, r.upstreamBlock(used[id], true))
	}
	for _, s := range streams {
		tree = append(tree, r.stream(s))
	}
	return tree
}

// stream renders the server{} block of one stream.
func (r *renderer) stream(s *agentv1.Stream) *crossplane.Directive {
	field := fmt.Sprintf("streams[id=%s]", s.GetId())
	if s.GetListenPort() == 0 || s.GetListenPort() > 65535 {
		r.fail(field+".listen_port", "%d is out of range 1-65535", s.GetListenPort())
	}
	listen := []string{strconv.FormatUint(uint64(s.GetListenPort()), 10)}
	switch s.GetProtocol() {
	case agentv1.StreamProtocol_STREAM_PROTOCOL_UNSPECIFIED, agentv1.StreamProtocol_TCP:
	case agentv1.StreamProtocol_UDP:
		listen = append(listen, "udp")
		if s.GetSslEnabled() {
			r.fail(field+".ssl_enabled", "TLS is not available for UDP streams")
		}
		if s.GetAcceptProxyProtocol() {
			r.fail(field+".accept_proxy_protocol", "the PROXY protocol is not available on UDP listeners")
		}
	default:
		r.fail(field+".protocol", "unknown protocol %d", s.GetProtocol())
	}
	if s.GetSslEnabled() {
		listen = append(listen, "ssl")
	}
	if s.GetAcceptProxyProtocol() {
		listen = append(listen, "proxy_protocol")
	}
	body := crossplane.Directives{dir("listen", listen...)}
	if s.GetSslEnabled() {
		crt, key := r.certPaths(field+".ssl_certificate_id", s.GetSslCertificateId())
		body = append(body, dir("ssl_certificate", crt), dir("ssl_certificate_key", key))
	}
	if r.opts.AccessLog != "" {
		body = append(body, dir("access_log", r.opts.AccessLog, StreamLogFormat))
	}
	body = append(body, dir("proxy_pass", nginxName("u_", s.GetUpstreamId())))
	if s.GetProxyProtocol() {
		body = append(body, dir("proxy_protocol", "on"))
	}
	if v := s.GetConnectTimeoutSeconds(); v > 0 {
		body = append(body, dir("proxy_connect_timeout", seconds(v)))
	}
	if v := s.GetTimeoutSeconds(); v > 0 {
		body = append(body, dir("proxy_timeout", seconds(v)))
	}
	if v := s.GetBandwidthLimit(); v != "" {
		r.sizeArg(field+".bandwidth_limit", v)
		body = append(body, dir("proxy_download_rate", v), dir("proxy_upload_rate", v))
	}
	return block("server", nil, body)
}
