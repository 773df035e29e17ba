package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nxmesh/nxmesh/agent/acmechallenge"
	"github.com/nxmesh/nxmesh/agent/nginx/render"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// acmeCheckTimeout bounds how long the agent tries to see its nginx serve a
// new token before it reports the challenge not ready.
const acmeCheckTimeout = 10 * time.Second

var _ interface {
	HandleACMEChallenge(context.Context, *agentv1.AcmeChallenge) *agentv1.AcmeChallengeStatus
} = (*agent)(nil)

// HandleACMEChallenge answers the master's AcmeChallenge (the
// controlplane.ACMEHandler): it writes the token's file into the challenge
// directory (or removes it), then confirms. A new token is ready only once
// the nginx the agent runs serves it: the live version was rendered with the
// challenge directory (render.Options.ACMEChallengeDir, always on), nginx is
// running, and a request to a plain-HTTP virtual host of the applied
// configuration on 127.0.0.1 returns the key authorization. A removal is
// confirmed with ready false and no error. Tokens expire by themselves at
// expires_at (acmechallenge.Store).
func (a *agent) HandleACMEChallenge(ctx context.Context, ch *agentv1.AcmeChallenge) *agentv1.AcmeChallengeStatus {
	st := &agentv1.AcmeChallengeStatus{ChallengeId: ch.GetChallengeId(), Token: ch.GetToken()}
	fail := func(err error) *agentv1.AcmeChallengeStatus {
		st.Ready, st.ErrorMessage = false, err.Error()
		a.log.Warn("ACME challenge not answered", "challenge_id", ch.GetChallengeId(), "remove", ch.GetRemove(), "error", err)
		return st
	}
	if a.acme == nil {
		return fail(errors.New("this agent has no ACME challenge directory"))
	}
	if ch.GetRemove() {
		if err := a.acme.Remove(ch.GetToken()); err != nil {
			return fail(err)
		}
		a.log.Info("ACME challenge removed", "challenge_id", ch.GetChallengeId())
		return st
	}
	var exp time.Time
	if s := ch.GetExpiresAt(); s > 0 {
		exp = time.Unix(s, 0)
	}
	if err := a.acme.Put(ch.GetToken(), ch.GetKeyAuthorization(), exp); err != nil {
		return fail(err)
	}
	cctx, cancel := context.WithTimeout(ctx, acmeCheckTimeout)
	defer cancel()
	if err := a.acmeServed(cctx, ch.GetToken(), ch.GetKeyAuthorization()); err != nil {
		return fail(err)
	}
	st.Ready = true
	a.log.Info("ACME challenge served", "challenge_id", ch.GetChallengeId())
	return st
}

// acmeServed retries checkACME until it succeeds or ctx ends.
func (a *agent) acmeServed(ctx context.Context, token, keyAuth string) error {
	for {
		err := a.checkACME(ctx, token, keyAuth)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// checkACME checks once that nginx serves token.
func (a *agent) checkACME(ctx context.Context, token, keyAuth string) error {
	st := a.mgr.Status()
	switch {
	case st.Live == nil || st.Live.ACMEChallengeDir != a.acme.Dir():
		return errors.New("the live nginx configuration does not serve the ACME challenge directory yet")
	case !st.Running:
		return errors.New("nginx is not running")
	}
	if !a.applyMu.TryLock() {
		return errors.New("a configuration is being applied")
	}
	base := a.base
	a.applyMu.Unlock()
	if base == nil {
		return errors.New("no configuration from the master is applied yet")
	}
	targets := acmeTargets(base)
	if len(targets) == 0 {
		return errors.New("no plain-HTTP virtual host is applied on this agent")
	}
	var errs []error
	for _, t := range targets {
		err := getChallenge(ctx, t, token, keyAuth)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("nginx does not serve the token: %w", errors.Join(errs...))
}

// acmeTarget is a plain-HTTP server of the applied configuration.
type acmeTarget struct {
	port uint32
	host string
}

// acmeTargets lists, per plain-HTTP port, one server name a request can
// use: virtual hosts without TLS, the plain http_port of TLS hosts, and
// port 80 of the HTTP-to-HTTPS redirects without http_port. Regular-expression and suffix-wildcard names are skipped.
func acmeTargets(u *agentv1.ConfigUpdate) []acmeTarget {
	var out []acmeTarget
	seen := map[uint32]bool{}
	add := func(port uint32, names string) {
		if seen[port] {
			return
		}
		for _, n := range strings.Fields(names) {
			switch {
			case strings.HasPrefix(n, "~") || strings.HasSuffix(n, ".*"):
				continue
			case strings.HasPrefix(n, "*."):
				n = "nxmesh-acme-check" + n[1:]
			case strings.HasPrefix(n, "."):
				n = n[1:]
			}
			seen[port] = true
			out = append(out, acmeTarget{port: port, host: n})
			return
		}
	}
	for _, vh := range u.GetVirtualHosts() {
		switch {
		case !vh.GetSslEnabled():
			port := vh.GetListenPort()
			if port == 0 {
				port = 80
			}
			add(port, vh.GetServerName())
		case vh.GetHttpPort() != 0:
			add(vh.GetHttpPort(), vh.GetServerName())
		case vh.GetRedirectHttps():
			add(80, vh.GetServerName())
		}
	}
	return out
}

// getChallenge asks nginx on loopback for the token, as the ACME server
// would.
func getChallenge(ctx context.Context, t acmeTarget, token, keyAuth string) error {
	url := "http://" + net.JoinHostPort("127.0.0.1", strconv.FormatUint(uint64(t.port), 10)) + render.ACMEChallengePath + token
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Host = t.host
	c := &http.Client{Timeout: 3 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("port %d: %w", t.port, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, acmechallenge.MaxKeyAuthLength+1))
	if resp.StatusCode != http.StatusOK || string(body) != keyAuth {
		return fmt.Errorf("port %d (Host %s): %s", t.port, t.host, resp.Status)
	}
	return nil
}
