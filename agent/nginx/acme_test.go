package nginx

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestManager_ACMEChallengeDir checks that an agent started with an ACME
// challenge directory over a version rendered without one renders the same
// update again (the master resends it on every connection), so that the
// challenge location is live, and that nginx then serves the directory.
func TestManager_ACMEChallengeDir(t *testing.T) {
	t.Parallel()
	b := setup(t)
	port := freeTestPort(t)
	u := proxyUpdate(1, []uint32{port}, []string{backend(t, "app")})
	u.Checksum = "acme0123456789"
	mustApply(t, b.m, u)
	if err := b.m.Close(t.Context()); err != nil {
		t.Fatal(err)
	}

	acme := filepath.Join(b.dir, "acme")
	if err := os.MkdirAll(acme, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(acme, "tok"), []byte("tok.thumb"), 0o644); err != nil {
		t.Fatal(err)
	}
	b.opts.ACMEChallengeDir = acme
	m := b.start(t)
	res := mustApply(t, m, u)
	if !res.Reloaded || res.Version.Name != "1-acme0123-r" || res.Version.ACMEChallengeDir != acme {
		t.Fatalf("apply with the directory: reloaded=%v version=%+v, want a new rendering", res.Reloaded, res.Version)
	}
	if st := m.Status(); st.Live == nil || st.Live.ACMEChallengeDir != acme {
		t.Errorf("live = %+v, want the challenge directory recorded", st.Live)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://127.0.0.1:" + strconv.Itoa(int(port)) + "/.well-known/acme-challenge/tok")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "tok.thumb" {
		t.Errorf("GET the token = %d %q, want 200 tok.thumb", resp.StatusCode, body)
	}
	if got := get(t, port); got != "app" {
		t.Errorf("GET / = %q, want the proxied app", got)
	}
	if res := mustApply(t, m, u); res.Reloaded || res.Version.Name != "1-acme0123-r" {
		t.Errorf("second apply: reloaded=%v version=%s, want already applied", res.Reloaded, res.Version.Name)
	}
}
