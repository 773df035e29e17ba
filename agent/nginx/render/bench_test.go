package render

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// benchWorkspace builds a workspace with n virtual hosts and n upstreams:
// every host proxies to its own upstream and serves static files, every
// tenth has TLS with an HTTP redirect, every seventh a rate limit, every
// fifth basic auth.
func benchWorkspace(tb testing.TB, n int) *agentv1.ConfigUpdate {
	tb.Helper()
	u := &agentv1.ConfigUpdate{
		ConfigId:     "bench",
		Version:      1,
		Certificates: map[string]*agentv1.Certificate{"bench-cert": goldenCertificate(tb)},
	}
	for i := range n {
		upID := fmt.Sprintf("up-%04d", i)
		u.Upstreams = append(u.Upstreams, &agentv1.Upstream{
			Id:                   upID,
			Algorithm:            agentv1.LoadBalanceAlgorithm(1 + i%4),
			KeepaliveConnections: uint32(i % 3 * 8),
			Servers: []*agentv1.UpstreamServer{
				{Address: fmt.Sprintf("127.0.%d.%d:8080", i/250, 1+i%250), Weight: 2, MaxFails: 3, FailTimeoutSeconds: 10},
				{Address: fmt.Sprintf("127.1.%d.%d:8080", i/250, 1+i%250), Down: i%2 == 0},
			},
		})
		vh := &agentv1.VirtualHost{
			Id:                      fmt.Sprintf("vh-%04d", i),
			ServerName:              fmt.Sprintf("app-%04d.example.test www.app-%04d.example.test", i, i),
			ClientMaxBodySize:       "10m",
			ProxyReadTimeoutSeconds: 60,
			CustomDirectives:        map[string]string{"gzip": "on"},
			Locations: []*agentv1.Location{
				{
					Path:       "/",
					UpstreamId: upID,
					Websocket:  i%11 == 0,
					CustomHeaders: []*agentv1.Header{
						{Name: "X-Tenant", Value: fmt.Sprintf("tenant-%d", i)},
						{Name: "X-Request-ID", Value: "$request_id"},
					},
				},
				{
					Path:          "^~ /static/",
					Root:          fmt.Sprintf("/srv/www/app-%04d", i),
					CustomHeaders: []*agentv1.Header{{Name: "Cache-Control", Value: "public, max-age=3600", Always: true}},
				},
				{
					Path:         "~ ^/legacy/(.*)$",
					RewriteRules: []*agentv1.RewriteRule{{Pattern: "^/legacy/(.*)$", Replacement: "/$1", Flag: "permanent"}},
				},
			},
		}
		if i%10 == 0 {
			vh.SslEnabled, vh.SslCertificateId, vh.Http2Enabled, vh.RedirectHttps = true, "bench-cert", true, true
		}
		if i%7 == 0 {
			vh.RateLimit = &agentv1.RateLimit{RequestsPerSecond: 10, Burst: 20}
		}
		if i%5 == 0 {
			vh.AccessList = &agentv1.AccessList{
				Allow:          []string{"10.0.0.0/8"},
				BasicAuthUsers: []*agentv1.BasicAuthUser{{Username: "admin", PasswordHash: "$2y$10$abcdefghijklmnopqrstuuH8tkq0b8bGqSRcOYc0aQyS3ZbCxKPnS"}},
			}
		}
		u.VirtualHosts = append(u.VirtualHosts, vh)
	}
	return u
}

// goldenCertificate returns the certificate of the ssl_http2 golden case,
// which nginx -t can load.
func goldenCertificate(tb testing.TB) *agentv1.Certificate {
	tb.Helper()
	for _, c := range loadGoldenCases(tb) {
		if cert := c.input.GetCertificates()["cert-example"]; cert != nil {
			return &agentv1.Certificate{CertificatePem: cert.GetCertificatePem(), PrivateKeyPem: cert.GetPrivateKeyPem()}
		}
	}
	tb.Fatal("no golden case has certificate cert-example")
	return nil
}

func BenchmarkRender1000(b *testing.B) {
	u := benchWorkspace(b, 1000)
	b.ReportAllocs()
	var size int
	for b.Loop() {
		files, err := Render(u, testOpts)
		if err != nil {
			b.Fatal(err)
		}
		size = len(files[HTTPConf])
	}
	b.ReportMetric(float64(size), "http.conf-bytes")
}

// BenchmarkNginxT1000 installs the rendered 1,000-host workspace and times
// nginx -t over it; run it with -benchtime=1x for a single measurement.
func BenchmarkNginxT1000(b *testing.B) {
	nginx := nginxBinary(b)
	dir := b.TempDir()
	files, err := Render(benchWorkspace(b, 1000), Options{ConfDir: filepath.Join(dir, "conf")})
	if err != nil {
		b.Fatal(err)
	}
	site := installSite(b, dir, files, nil)
	var total time.Duration
	for b.Loop() {
		ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
		start := time.Now()
		err := nginxT(ctx, nginx, site)
		total += time.Since(start)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "nginx-t-ms/op")
}
