// Package bench holds load runs of the master measured against a baseline in the
// same run. Run them with `go tool task bench`.
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/modules/auth"
	"github.com/nxmesh/nxmesh/modules/orgs"
	"github.com/nxmesh/nxmesh/modules/orgs/orgstest"
)

const (
	concurrency = 16
	loadFor     = 3 * time.Second
)

// BenchmarkAPIRead loads two authenticated reads of the master — the list of 20
// workspaces of an organization and one workspace — at a fixed concurrency, and the
// same load against a bare Fiber handler that returns the same JSON from memory, and
// prints requests/s, p50 and p99 latency and the ratio to the baseline.
func BenchmarkAPIRead(b *testing.B) {
	ctx := context.Background()
	a := apptest.NewApp(b, func(c *app.Config) {
		c.Auth.RateLimitPerMinute = 1 << 30 // measure the request path, not the limiter
		c.Database.MaxConns = 20
	})
	base := orgstest.New(b, a)
	authMod, orgsMod := base.Auth, base.Orgs
	base.Mount(b)
	user, err := authMod.Service().CreateUser(ctx, auth.CreateUserParams{Email: "bench@example.com", Password: "bench-password-1"})
	if err != nil {
		b.Fatal(err)
	}
	org, err := orgsMod.Service().CreateOrganization(ctx, orgs.CreateOrganizationParams{Name: "Bench", Slug: "bench", OwnerID: user.ID})
	if err != nil {
		b.Fatal(err)
	}
	var ws orgs.Workspace
	for i := range 20 {
		ws, err = orgsMod.Service().CreateWorkspace(ctx, orgs.CreateWorkspaceParams{OrgID: org.ID, Name: fmt.Sprintf("Workspace %d", i), Slug: fmt.Sprintf("ws-%02d", i)})
		if err != nil {
			b.Fatal(err)
		}
	}
	master := serve(b, a.Fiber())
	token := login(b, master, "bench@example.com", "bench-password-1")

	paths := []struct{ name, path string }{
		{"ListWorkspaces20", "/v1/organizations/" + org.ID.String() + "/workspaces"},
		{"GetWorkspace", "/v1/workspaces/" + ws.ID.String()},
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "\nendpoint\ttarget\treq/s\tp50\tp99\tratio (req/s vs bare)\n")
	for _, p := range paths {
		body := get(b, master+p.path, token)
		bare := fiber.New(fiber.Config{DisableStartupMessage: true})
		bare.Get("/*", func(c *fiber.Ctx) error {
			c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
			return c.Send(body)
		})
		bareURL := serve(b, bare)
		var full, base result
		b.Run(p.name, func(b *testing.B) {
			full = load(b, master+p.path, token)
			base = load(b, bareURL+p.path, token)
			b.ReportMetric(full.rps, "req/s")
			b.ReportMetric(float64(full.p99.Microseconds())/1000, "p99-ms")
			b.ReportMetric(full.rps/base.rps, "ratio-vs-bare")
		})
		fmt.Fprintf(w, "%s\tnxmesh\t%.0f\t%s\t%s\t%.2f\n", p.name, full.rps, full.p50, full.p99, full.rps/base.rps)
		fmt.Fprintf(w, "%s\tbare fiber\t%.0f\t%s\t%s\t1.00\n", p.name, base.rps, base.p50, base.p99)
	}
	fmt.Fprintf(w, "(concurrency %d, %s per target, keep-alive HTTP over loopback)\n", concurrency, loadFor)
	w.Flush()
}

type result struct {
	rps      float64
	p50, p99 time.Duration
}

func serve(b *testing.B, f *fiber.App) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = f.Listener(lis) }()
	b.Cleanup(func() { _ = f.ShutdownWithTimeout(2 * time.Second) })
	return "http://" + lis.Addr().String()
}

func client() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: concurrency * 2}, Timeout: 10 * time.Second}
}

// closeIdle drops c's keep-alive connections so servers can shut down.
func closeIdle(c *http.Client) { c.CloseIdleConnections() }

func login(b *testing.B, base, email, password string) string {
	body, _ := json.Marshal(map[string]string{"email": email, "password": password})
	resp, err := http.Post(base+"/v1/auth/login", "application/json", bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.AccessToken == "" {
		b.Fatalf("login: status %d: %v", resp.StatusCode, err)
	}
	return out.AccessToken
}

func get(b *testing.B, url, token string) []byte {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	c := client()
	defer closeIdle(c)
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	return body
}

// load runs concurrency workers against url for loadFor and returns throughput
// and latency percentiles. Every response must be 200.
func load(b *testing.B, url, token string) result {
	c := client()
	var mu sync.Mutex
	var lat []time.Duration
	var failed error
	deadline := time.Now().Add(loadFor)
	var wg sync.WaitGroup
	start := time.Now()
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 4096)
			for time.Now().Before(deadline) {
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				req.Header.Set("Authorization", "Bearer "+token)
				t0 := time.Now()
				resp, err := c.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
					return
				}
				local = append(local, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	closeIdle(c)
	if failed != nil {
		b.Fatalf("load %s: %v", url, failed)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration { return lat[int(float64(len(lat)-1)*p)].Round(10 * time.Microsecond) }
	return result{rps: float64(len(lat)) / elapsed.Seconds(), p50: pct(0.50), p99: pct(0.99)}
}

func TestMain(m *testing.M) { apptest.Main(m) }
