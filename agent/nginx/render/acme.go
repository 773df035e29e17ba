package render

import (
	"fmt"
	"path"
	"path/filepath"
	"slices"

	crossplane "github.com/nginxinc/nginx-go-crossplane"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// ACMEChallengePath is the URI prefix of ACME HTTP-01 challenges (RFC 8555
// section 8.3): GET ACMEChallengePath+<token> must return the token's key
// authorization.
const ACMEChallengePath = "/.well-known/acme-challenge/"

// checkACMEDir validates Options.ACMEChallengeDir and returns it cleaned.
func checkACMEDir(d string) (string, error) {
	if !filepath.IsAbs(d) {
		return "", fmt.Errorf("%w: Options.ACMEChallengeDir must be an absolute path, got %q", ErrInvalidConfig, d)
	}
	d = path.Clean(d)
	if d == "/" {
		return "", fmt.Errorf("%w: Options.ACMEChallengeDir may not be /", ErrInvalidConfig)
	}
	if err := ValidateArg(d + "/"); err != nil {
		return "", fmt.Errorf("%w: Options.ACMEChallengeDir: %w", ErrInvalidConfig, err)
	}
	return d, nil
}

// acmeLocation is the location that serves the challenge files of
// Options.ACMEChallengeDir on a plain-HTTP server, or nil when the option
// is off. vh is the virtual host of the server (nil for default servers
// and redirect servers, which have no access rules of their own).
//
// "^~" keeps the host's regular-expression locations from taking the
// request; alias maps the token to a file of the directory and try_files
// answers 404 for anything that is not a file there (the directory itself
// included). Access rules, basic auth and rate limits the host declares at
// server level would be inherited: "allow all", "auth_basic off" and
// "limit_req_dry_run on" (nginx 1.17.1+, only when the host limits) undo
// them, because the ACME server must always be answered.
func (r *renderer) acmeLocation(vh *agentv1.VirtualHost) *crossplane.Directive {
	if r.acmeDir == "" {
		return nil
	}
	body := crossplane.Directives{
		dir("default_type", "text/plain"),
		dir("alias", r.acmeDir+"/"),
		dir("try_files", "$uri", "=404"),
	}
	if vh != nil {
		body = append(body, dir("allow", "all"), dir("auth_basic", "off"))
		if vh.GetRateLimit().GetRequestsPerSecond() > 0 || hasCustom(vh.GetCustomDirectives(), "limit_req") {
			body = append(body, dir("limit_req_dry_run", "on"))
		}
	}
	return block("location", []string{"^~", ACMEChallengePath}, body)
}

func hasCustom(m map[string]string, name string) bool {
	_, ok := m[name]
	return ok
}

// ownsACMEPath reports whether one of the host's locations is the
// challenge prefix itself (with or without "^~"): nginx refuses two
// locations of one path, so the host's own location answers challenges
// instead.
func ownsACMEPath(vh *agentv1.VirtualHost) bool {
	return slices.ContainsFunc(vh.GetLocations(), func(l *agentv1.Location) bool {
		args := locationArgs(l.GetPath())
		p := args[len(args)-1]
		return (len(args) == 1 || args[0] == "^~") && p == ACMEChallengePath
	})
}

// withACME returns the body of a plain-HTTP server that ends in the
// server-level "return" ret: unchanged when the option is off, else with
// the challenge location and ret moved into "location /" (a server-level
// return would answer before any location is chosen). vh is as for
// acmeLocation.
func (r *renderer) withACME(vh *agentv1.VirtualHost, body crossplane.Directives, ret *crossplane.Directive) crossplane.Directives {
	loc := r.acmeLocation(vh)
	if loc == nil {
		return append(body, ret)
	}
	return append(body, loc, block("location", []string{"/"}, crossplane.Directives{ret}))
}
