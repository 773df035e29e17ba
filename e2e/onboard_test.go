package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/nxmesh/nxmesh/app/apptest"
)

// TestOnboarding installs an agent the way "Add agent" tells an operator to:
// the agent binary for this machine's CPU is built into the master's
// downloads directory (as `go tool task build-agents` does), downloaded
// through the master's /downloads/ routes and checked against its
// SHA256SUMS; the master's install script installs it (under a prefix,
// without systemd); the installed binary then runs with the flags of the
// printed install command, registers and comes online.
func TestOnboarding(t *testing.T) {
	if _, err := os.Stat(fleetNginx); err != nil {
		t.Fatalf("nginx is required at %s: %v", fleetNginx, err)
	}
	arch := runtime.GOARCH
	if arch != "amd64" && arch != "arm64" {
		t.Fatalf("the master serves agents for amd64 and arm64, not %s", arch)
	}
	dir := t.TempDir()
	dbURL := apptest.NewDatabase(t)
	masterBin := filepath.Join(dir, "nxmesh")
	downloads := filepath.Join(dir, "master", "downloads")
	binName := "nxmesh-agent-linux-" + arch
	buildOnboarding(t, masterBin, filepath.Join(downloads, binName), arch)

	m := newFleetMaster(t, masterBin, dbURL, dir)
	m.start(t)
	m.login(t)
	ws := m.workspace(t)

	// The binary and its checksum, as anyone without credentials fetches them.
	bin := onboardGet(t, m.base+"/downloads/"+binName, http.StatusOK)
	sums := onboardGet(t, m.base+"/downloads/SHA256SUMS", http.StatusOK)
	built, err := os.ReadFile(filepath.Join(downloads, binName))
	if err != nil {
		t.Fatal(err)
	}
	if string(bin) != string(built) {
		t.Fatalf("downloaded %d bytes, built %d", len(bin), len(built))
	}
	sum := sha256.Sum256(bin)
	if want := hex.EncodeToString(sum[:]) + "  " + binName + "\n"; !strings.Contains(string(sums), want) {
		t.Fatalf("SHA256SUMS %q lacks %q", sums, want)
	}
	other := "nxmesh-agent-linux-arm64"
	if arch == "arm64" {
		other = "nxmesh-agent-linux-amd64"
	}
	if body := onboardGet(t, m.base+"/downloads/"+other, http.StatusNotFound); !strings.Contains(string(body), "build-agents") {
		t.Fatalf("missing binary: %q", body)
	}
	onboardGet(t, m.base+"/downloads/..%2fmaster.log", http.StatusNotFound)

	tok := m.api.createToken(t, ws, "onboard", map[string]string{"env": "green"})
	if !strings.Contains(tok.InstallCommand, "--master "+m.grpcAddr+" ") {
		t.Fatalf("install command %q does not dial the master at %s", tok.InstallCommand, m.grpcAddr)
	}

	// The install script, run as an operator would pipe it into sh.
	script := onboardGet(t, m.base+"/downloads/install.sh", http.StatusOK)
	prefix := filepath.Join(dir, "root")
	cmd := exec.Command("sh", "-s", "--", "--token", tok.Token, "--prefix", prefix, "--no-start")
	cmd.Stdin = strings.NewReader(string(script))
	cmd.Env = fleetEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("install.sh: %v\n%s", err, out)
	}
	installed := filepath.Join(prefix, "usr", "local", "bin", "nxmesh-agent")
	if got, err := os.ReadFile(installed); err != nil || string(got) != string(built) {
		t.Fatalf("installed binary differs from the built one (%v)", err)
	}
	envFile, err := os.ReadFile(filepath.Join(prefix, "etc", "nxmesh-agent", "agent.env"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(envFile), "NXMESH_AGENT_TOKEN="+tok.Token+"\n") || !strings.Contains(string(envFile), "NXMESH_AGENT_MASTER="+m.grpcAddr+"\n") {
		t.Fatalf("agent.env:\n%s", envFile)
	}

	// The installed binary with the printed command's flags.
	fields := strings.Fields(tok.InstallCommand)
	if len(fields) == 0 || fields[0] != "nxmesh-agent" {
		t.Fatalf("install command %q", tok.InstallCommand)
	}
	agentData, nginxPrefix := filepath.Join(dir, "agent"), filepath.Join(dir, "nginx")
	t.Cleanup(func() { fleetKillNginx(t, nginxPrefix) })
	agent := newFleetProc(t, "agent", installed, dir)
	agent.args = append(fields[1:], "--data-dir", agentData, "--nginx-prefix", nginxPrefix, "--nginx-binary", fleetNginx)
	if os.Geteuid() == 0 {
		agent.args = append(agent.args, "--nginx-user", "root")
	}
	agent.env = fleetEnv()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("master log:\n%s", fleetTail(fleetWithoutOKRequests(m.proc.log()), 200))
			t.Logf("agent log:\n%s", fleetTail(agent.log(), 200))
		}
	})
	agent.start(t)
	ag := m.api.awaitAgent(t, tok.AgentID, "the installed agent online", func(a fleetAgent) bool { return a.State == "online" })
	if ag.Labels["env"] != "green" {
		t.Errorf("labels %v, want the token's env=green", ag.Labels)
	}

	t.Run("AddAgentDialogAndTargetPickerInChromium", func(t *testing.T) {
		onboardBrowser(t, m, ws, tok.AgentID)
	})
}

// onboardBrowser drives the virtual host form's agent picker and "Add agent"
// in Chromium: ticking the agent lists it as the target; the install
// commands' tabs switch, their text wraps, the copy button answers.
func onboardBrowser(t *testing.T, m *fleetMaster, ws, agentID string) {
	browser := openBrowser(t)
	agents := m.base + "/workspaces/" + ws + "/agents"
	err := chromedp.Run(browser,
		chromedp.Navigate(agents),
		chromedp.WaitVisible(`input[name="email"]`, chromedp.ByQuery),
		chromedp.SendKeys(`input[name="email"]`, adminEmail, chromedp.ByQuery),
		chromedp.SendKeys(`input[name="password"]`, adminPassword, chromedp.ByQuery),
		chromedp.Click(`form[action="/login"] button[type="submit"]`, chromedp.ByQuery),
		chromedp.Sleep(time.Second),
	)
	if err != nil {
		t.Fatalf("sign in: %v", err)
	}

	// The agent picker of the virtual host form.
	var ids, kind string
	box := `input[data-target-agent][value="` + agentID + `"]`
	form, cancelForm := context.WithTimeout(browser, 30*time.Second)
	defer cancelForm()
	if err := chromedp.Run(form, chromedp.Navigate(m.base+"/workspaces/"+ws+"/virtual-hosts/new"), chromedp.WaitVisible(box, chromedp.ByQuery)); err != nil {
		var picker string
		_ = chromedp.Run(browser, chromedp.Evaluate(`(document.getElementById("target-agent-picker") || document.body).outerHTML`, &picker))
		t.Fatalf("agent picker: %v\n%.3000s", err, picker)
	}
	var clicked bool
	err = chromedp.Run(form,
		chromedp.Evaluate(`(() => { const b = document.querySelector('`+box+`'); b.click(); return b.checked })()`, &clicked),
		chromedp.Evaluate(`document.querySelector('[name="target_agents.agent_ids"]').value`, &ids),
		chromedp.Evaluate(`document.querySelector('[name="target_agents.type"]').value`, &kind),
	)
	if err != nil {
		var names string
		_ = chromedp.Run(browser, chromedp.Evaluate(`location.href + " " + Array.from(document.querySelectorAll("[name]")).map(e => e.name).join(" ")`, &names))
		t.Fatalf("agent picker: %v\n%s", err, names)
	}
	if ids != agentID || kind != "agents" {
		t.Fatalf("after ticking the agent: agent_ids %q, type %q", ids, kind)
	}

	err = chromedp.Run(browser,
		chromedp.Navigate(agents),
		chromedp.WaitVisible(`#add-agent input[name="name"]`, chromedp.ByQuery),
		chromedp.SendKeys(`#add-agent input[name="name"]`, "browser-01", chromedp.ByQuery),
		chromedp.Click(`#add-agent button[type="submit"]`, chromedp.ByQuery),
		chromedp.WaitVisible(`#install-script-tab`, chromedp.ByQuery),
	)
	if err != nil {
		t.Fatalf("add an agent: %v", err)
	}
	visible := func(id string) bool {
		var v bool
		if err := chromedp.Run(browser, chromedp.Evaluate(`(() => { const e = document.getElementById(`+"`"+id+"`"+`); return !!e && !e.hidden && e.offsetParent !== null })()`, &v)); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if !visible("install-script") || visible("install-download") || visible("install-container") {
		t.Fatal("the first tab alone should show")
	}
	if err := chromedp.Run(browser, chromedp.Click(`#install-download-tab`, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	if visible("install-script") || !visible("install-download") {
		t.Fatal("the Binary tab did not switch the panels")
	}
	var download, wrap string
	err = chromedp.Run(browser,
		chromedp.Text(`#install-download-command`, &download, chromedp.ByQuery),
		chromedp.Evaluate(`getComputedStyle(document.querySelector("#install-download pre")).whiteSpace`, &wrap),
	)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(download, m.base+"/downloads/nxmesh-agent-linux-$arch") || wrap != "pre-wrap" {
		t.Fatalf("download command %q, white-space %q", download, wrap)
	}
	var label string
	err = chromedp.Run(browser,
		chromedp.Click(`#install-download button[data-copy]`, chromedp.ByQuery),
		chromedp.Poll(`document.querySelector("#install-download button[data-copy]").textContent !== "Copy"`, nil, chromedp.WithPollingTimeout(5*time.Second)),
		chromedp.Text(`#install-download button[data-copy]`, &label, chromedp.ByQuery),
	)
	if err != nil || (label != "Copied" && label != "Select and copy") {
		t.Fatalf("copy button: %q, %v", label, err)
	}

}

// buildOnboarding builds the master, and the agent for linux/arch the way
// `go tool task build-agents` does, at once.
func buildOnboarding(t *testing.T, master, agent, arch string) {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(agent), 0o755); err != nil {
		t.Fatal(err)
	}
	builds := []*exec.Cmd{
		exec.Command("go", "build", "-o", master, "."),
		exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=e2e", "-o", agent, "./agent"),
	}
	builds[1].Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	var wg sync.WaitGroup
	errs := make([]error, len(builds))
	for i, cmd := range builds {
		cmd.Dir = root
		wg.Go(func() {
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// onboardGet fetches url without credentials and expects status.
func onboardGet(t *testing.T, url string, status int) []byte {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != status {
		t.Fatalf("GET %s: %d, want %d: %.300s", url, resp.StatusCode, status, body)
	}
	return body
}
