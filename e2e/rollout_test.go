package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/nxmesh/nxmesh/app/apptest"
)

// signal sends sig to the running program.
func (p *fleetProc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		t.Fatalf("%s is not running", p.name)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s: %v", p.name, err)
	}
}

// TestRollout_Browser saves, in the admin, a virtual host on a port another
// listener holds, with the real master, agent and nginx: the flash names the
// saved version instead of claiming success, and the rollout panel under it
// goes, live, from pending to rolled back with nginx's own error text. The
// workspace overview then counts the agent as degraded with that error.
func TestRollout_Browser(t *testing.T) {
	if _, err := os.Stat(fleetNginx); err != nil {
		t.Fatalf("nginx is required at %s: %v", fleetNginx, err)
	}
	chromiumPath(t)
	bins := buildFleetBinaries(t)
	dir := t.TempDir()
	dbURL := apptest.NewDatabase(t)
	f := &fleet{agentData: filepath.Join(dir, "agent"), nginxPrefix: filepath.Join(dir, "nginx")}
	f.m = newFleetMaster(t, bins.master, dbURL, dir)
	t.Cleanup(func() { fleetKillNginx(t, f.nginxPrefix) })
	f.agent = newFleetProc(t, "agent", bins.agent, dir)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("master log (successful requests left out):\n%s", fleetTail(fleetWithoutOKRequests(f.m.proc.log()), 200))
			t.Logf("agent log:\n%s", fleetTail(f.agent.log(), 200))
		}
	})
	f.m.start(t)
	f.m.login(t)
	f.ws = f.m.workspace(t)
	f.token = f.m.api.createToken(t, f.ws, "e2e", map[string]string{"env": "blue"})
	f.agentID = f.token.AgentID
	f.agent.args = append(f.agentArgs(f.m.grpcAddr), "--ca-fingerprint", f.token.fingerprint(t))
	f.agent.env = fleetEnv("NXMESH_AGENT_TOKEN=" + f.token.Token)
	f.agent.start(t)
	f.m.api.awaitAgent(t, f.agentID, "the agent online", func(a fleetAgent) bool { return a.State == "online" })
	f.m.api.awaitApplied(t, f.ws, f.agentID)

	// Another program holds the port on every address.
	held, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	port := held.Addr().(*net.TCPAddr).Port
	next := f.m.api.configVersion(t, f.ws) + 1

	b := openBrowser(t)
	ws := "/workspaces/" + f.ws
	err = chromedp.Run(b,
		chromedp.Navigate(f.m.base+ws+"/virtual-hosts/new"),
		chromedp.WaitVisible(`input[name="email"]`, chromedp.ByQuery),
		chromedp.SendKeys(`input[name="email"]`, adminEmail, chromedp.ByQuery),
		chromedp.SendKeys(`input[name="password"]`, adminPassword, chromedp.ByQuery),
		chromedp.Click(`form[action="/login"] button[type="submit"]`, chromedp.ByQuery),
		chromedp.WaitVisible(`#vhost-form`, chromedp.ByQuery),
		chromedp.SendKeys(byName("name"), "clash", chromedp.ByQuery),
		chromedp.SendKeys(byName("server_name"), "clash.test", chromedp.ByQuery),
		chromedp.SetValue(byName("listen_port"), strconv.Itoa(port), chromedp.ByQuery),
		chromedp.SendKeys(byName("locations[0].path"), "/", chromedp.ByQuery),
		chromedp.SendKeys(byName("locations[0].proxy_pass"), "http://127.0.0.1:9", chromedp.ByQuery),
	)
	if err != nil {
		t.Fatalf("fill the virtual host form: %v", err)
	}

	// The agent is held still while the change is saved, so that the panel
	// shows the version pending before the agent answers.
	f.agent.signal(t, syscall.SIGSTOP)
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			f.agent.signal(t, syscall.SIGCONT)
		}
	}
	defer resume()
	var flash, pending string
	err = chromedp.Run(b,
		chromedp.Click(`#save-virtual-host`, chromedp.ByQuery),
		chromedp.WaitVisible(`#flash .flash`, chromedp.ByQuery),
		textOf(`#flash .flash`, &flash),
		chromedp.WaitVisible(`.rollout [data-status="pending"]`, chromedp.ByQuery),
		textOf(`.rollout`, &pending),
	)
	resume()
	if err != nil {
		t.Fatalf("save the virtual host: %v", err)
	}
	mustContain(t, "flash", flash, fmt.Sprintf("Saved as version %d", next), `Virtual host "clash" created.`)
	if strings.Contains(strings.ToLower(flash), "applied") || strings.Contains(flash, "live") {
		t.Errorf("the flash claims the change is live: %q", flash)
	}
	mustContain(t, "pending rollout", pending, fmt.Sprintf("Version %d rollout", next), "e2e", "pending")

	var rolled, done string
	err = chromedp.Run(b,
		chromedp.WaitVisible(`.rollout [data-status="rolled_back"]`, chromedp.ByQuery),
		textOf(`.rollout`, &rolled),
		chromedp.AttributeValue(`.rollout-body`, "data-rollout-done", &done, nil, chromedp.ByQuery),
	)
	if err != nil {
		t.Fatalf("wait for the rollback in the panel: %v", err)
	}
	mustContain(t, "rolled back rollout", rolled, "rolled back",
		fmt.Sprintf(":%d failed (98: Address already in use)", port), "bind()")
	if done != "true" {
		t.Errorf("data-rollout-done = %q after the rollback, want true", done)
	}

	// The API agrees, and the overview shows the failing agent.
	var ver struct {
		Agents []struct {
			AgentID      string `json:"agent_id"`
			Status       string `json:"status"`
			ErrorMessage string `json:"error_message"`
		} `json:"agents"`
	}
	f.m.api.call(t, http.MethodGet, fmt.Sprintf("/v1/workspaces/%s/config/versions/%d", f.ws, next), nil, http.StatusOK, &ver)
	if len(ver.Agents) != 1 || ver.Agents[0].AgentID != f.agentID || ver.Agents[0].Status != "rolled_back" ||
		!strings.Contains(ver.Agents[0].ErrorMessage, "Address already in use") {
		t.Fatalf("version %d agents = %+v", next, ver.Agents)
	}
	var overview string
	err = chromedp.Run(b,
		chromedp.Navigate(f.m.base+ws),
		chromedp.WaitVisible(`#overview-failing`, chromedp.ByQuery),
		textOf(`main`, &overview),
	)
	if err != nil {
		t.Fatalf("overview: %v", err)
	}
	mustContain(t, "overview", overview, "degraded", "Address already in use",
		fmt.Sprintf("Version %d: 0 of 1 registered agents run it.", next), "virtual_host.create")
}
