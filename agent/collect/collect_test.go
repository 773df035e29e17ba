package collect

import (
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

func TestParseStubStatus(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		text    string
		want    StubStatus
		wantErr bool
	}{
		{
			name: "Nginx122Output",
			text: "Active connections: 2 \nserver accepts handled requests\n 10 9 25 \nReading: 0 Writing: 1 Waiting: 1 \n",
			want: StubStatus{Active: 2, Accepts: 10, Handled: 9, Requests: 25, Writing: 1, Waiting: 1},
		},
		{name: "RejectsTruncated", text: "Active connections: 2\n", wantErr: true},
		{name: "RejectsGarbage", text: "<html>\n<body>\nnot found\n</body>\n</html>", wantErr: true},
		{name: "RejectsBadCounters", text: "Active connections: 1\nserver accepts handled requests\n 1 x 3\nReading: 0 Writing: 1 Waiting: 0\n", wantErr: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseStubStatus(c.text)
			if (err != nil) != c.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, c.wantErr)
			}
			if err == nil && got != c.want {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestCollector_Nginx(t *testing.T) {
	t.Parallel()
	var requests atomic.Uint64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "Active connections: 3 \nserver accepts handled requests\n 5 5 %d \nReading: 0 Writing: 1 Waiting: 2 \n", requests.Load())
	}))
	t.Cleanup(srv.Close)
	now := time.Unix(1000, 0)
	c := New(Options{Now: func() time.Time { return now }})

	requests.Store(100)
	s, err := c.Nginx(t.Context(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if s.ActiveConnections != 3 || s.TotalRequests != 100 || s.RequestsPerSecond != 0 {
		t.Errorf("first sample = %+v", s)
	}

	requests.Store(150)
	now = now.Add(10 * time.Second)
	if s, err = c.Nginx(t.Context(), srv.URL); err != nil {
		t.Fatal(err)
	}
	if s.RequestsPerSecond != 5 {
		t.Errorf("rps = %v, want 5", s.RequestsPerSecond)
	}

	// nginx restarted: the counter went back; no negative rate.
	requests.Store(4)
	now = now.Add(10 * time.Second)
	if s, err = c.Nginx(t.Context(), srv.URL); err != nil {
		t.Fatal(err)
	}
	if s.RequestsPerSecond != 0 {
		t.Errorf("rps after counter reset = %v, want 0", s.RequestsPerSecond)
	}
}

func TestCollector_NginxMetrics(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "Active connections: 7 \nserver accepts handled requests\n 11 10 42 \nReading: 1 Writing: 2 Waiting: 4 \n")
	}))
	t.Cleanup(srv.Close)
	s, err := New(Options{}).Nginx(t.Context(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		v   float64
		typ agentv1.MetricType
	}{
		"nginx.connections.active":   {7, agentv1.MetricType_GAUGE},
		"nginx.connections.accepted": {11, agentv1.MetricType_COUNTER},
		"nginx.connections.handled":  {10, agentv1.MetricType_COUNTER},
		"nginx.requests.total":       {42, agentv1.MetricType_COUNTER},
		"nginx.connections.reading":  {1, agentv1.MetricType_GAUGE},
		"nginx.connections.writing":  {2, agentv1.MetricType_GAUGE},
		"nginx.connections.waiting":  {4, agentv1.MetricType_GAUGE},
		"nginx.requests.per_second":  {0, agentv1.MetricType_GAUGE},
	}
	got := s.Metrics(99)
	if len(got) != len(want) {
		t.Fatalf("%d metrics, want %d: %v", len(got), len(want), got)
	}
	for _, m := range got {
		w, ok := want[m.GetName()]
		if !ok {
			t.Errorf("unexpected metric %q", m.GetName())
			continue
		}
		if m.GetValue() != w.v || m.GetType() != w.typ || m.GetTimestamp() != 99 {
			t.Errorf("%s = %v (%v, ts %d), want %v (%v, ts 99)", m.GetName(), m.GetValue(), m.GetType(), m.GetTimestamp(), w.v, w.typ)
		}
	}
}

func TestCollector_System(t *testing.T) {
	t.Parallel()

	t.Run("ReadsProcFiles", func(t *testing.T) {
		t.Parallel()
		proc := t.TempDir()
		write := func(name, text string) {
			if err := os.WriteFile(filepath.Join(proc, name), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		write("meminfo", "MemTotal:       16000 kB\nMemFree:         1000 kB\nMemAvailable:    4000 kB\n")
		write("loadavg", "0.52 0.40 0.30 1/200 12345\n")
		// user nice system idle iowait irq softirq steal guest guest_nice
		write("stat", "cpu  100 0 100 700 100 0 0 0 50 0\ncpu0 1 2 3 4\nbtime 1\n")
		c := New(Options{ProcDir: proc, DiskPath: t.TempDir()})
		s, err := c.System()
		if err != nil {
			t.Fatal(err)
		}
		if s.CPUPercent != 0 {
			t.Errorf("first CPU sample = %v, want 0", s.CPUPercent)
		}
		if s.MemoryTotalBytes != 16000*1024 || s.MemoryUsedBytes != 12000*1024 {
			t.Errorf("memory = %d/%d", s.MemoryUsedBytes, s.MemoryTotalBytes)
		}
		if s.LoadAverage1m != 0.52 {
			t.Errorf("load = %v", s.LoadAverage1m)
		}
		if s.DiskTotalBytes == 0 || s.DiskUsedBytes > s.DiskTotalBytes {
			t.Errorf("disk = %d/%d", s.DiskUsedBytes, s.DiskTotalBytes)
		}

		// 200 more jiffies, 50 of them idle: 75 % busy.
		write("stat", "cpu  200 0 150 750 100 0 0 0 50 0\n")
		if s, err = c.System(); err != nil {
			t.Fatal(err)
		}
		if math.Abs(s.CPUPercent-75) > 1e-9 {
			t.Errorf("CPU = %v, want 75", s.CPUPercent)
		}
	})

	t.Run("ReadsThisHost", func(t *testing.T) {
		t.Parallel()
		c := New(Options{DiskPath: t.TempDir()})
		s, err := c.System()
		if err != nil {
			t.Fatal(err)
		}
		if s.MemoryTotalBytes == 0 || s.DiskTotalBytes == 0 {
			t.Errorf("sample = %+v", s)
		}
	})
}
