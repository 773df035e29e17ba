package vhosts

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/uuid"
)

// ServerNameCovers reports whether a server_name value (space-separated
// names, each exact or "*.<suffix>") matches domain as nginx would: an
// exact name case-insensitively, "*.example.com" every name ending in
// ".example.com" (any depth, not example.com itself).
func ServerNameCovers(serverName, domain string) bool {
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	if domain == "" {
		return false
	}
	for _, n := range strings.Fields(strings.ToLower(serverName)) {
		if n == domain {
			return true
		}
		if suffix, ok := strings.CutPrefix(n, "*"); ok && strings.HasPrefix(suffix, ".") && strings.HasSuffix(domain, suffix) && len(domain) > len(suffix) {
			return true
		}
	}
	return false
}

// ServesHTTP reports whether a virtual host of the workspace answers domain
// over plain HTTP, where ACME HTTP-01 challenges arrive: a host without
// ssl_enabled, or one with an http_port or redirect_https (its plain port
// or redirect server),
// whose server names cover domain (ServerNameCovers). It is the certs
// module's ServedFunc. The listen port is not checked: a host on another
// port may sit behind a port-80 forward.
func (s *Service) ServesHTTP(ctx context.Context, workspaceID uuid.UUID, domain string) (bool, error) {
	var rows []vhostRow
	err := s.db.WithContext(ctx).Select("server_name").
		Where("workspace_id = ? AND (NOT ssl_enabled OR redirect_https OR http_port <> 0)", workspaceID).Find(&rows).Error
	if err != nil {
		return false, fmt.Errorf("virtual hosts serving %s over HTTP: %w", domain, err)
	}
	for _, r := range rows {
		if ServerNameCovers(r.ServerName, domain) {
			return true, nil
		}
	}
	return false, nil
}
