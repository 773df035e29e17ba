// Package collect samples what the agent reports about nginx and its host:
// nginx's stub_status (connections, request counter and its rate) and host
// metrics from /proc (CPU, memory, load) and statfs (disk). Host adds the
// detailed host view: CPU times per mode, load 1/5/15, memory and swap, every
// mounted file system (pseudo file systems skipped) and every network
// interface's counters (/proc/net/dev).
//
// Rates need two samples; a Collector keeps the previous ones, so the first
// call reports zero CPU percent and zero requests per second.
package collect

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// StubStatus is nginx's stub_status page.
type StubStatus struct {
	Active   uint64
	Accepts  uint64
	Handled  uint64
	Requests uint64
	Reading  uint64
	Writing  uint64
	Waiting  uint64
}

// ParseStubStatus parses the text of nginx's stub_status page:
//
//	Active connections: 2
//	server accepts handled requests
//	 10 10 25
//	Reading: 0 Writing: 1 Waiting: 1
func ParseStubStatus(text string) (StubStatus, error) {
	var s StubStatus
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if len(lines) < 4 {
		return s, fmt.Errorf("parse stub_status: %d lines, want 4", len(lines))
	}
	active, ok := strings.CutPrefix(strings.TrimSpace(lines[0]), "Active connections:")
	if !ok {
		return s, fmt.Errorf("parse stub_status: first line %q", lines[0])
	}
	var err error
	if s.Active, err = strconv.ParseUint(strings.TrimSpace(active), 10, 64); err != nil {
		return s, fmt.Errorf("parse stub_status active connections: %w", err)
	}
	counters := strings.Fields(lines[2])
	if len(counters) != 3 {
		return s, fmt.Errorf("parse stub_status counters %q", lines[2])
	}
	for i, dst := range []*uint64{&s.Accepts, &s.Handled, &s.Requests} {
		if *dst, err = strconv.ParseUint(counters[i], 10, 64); err != nil {
			return s, fmt.Errorf("parse stub_status counters: %w", err)
		}
	}
	f := strings.Fields(lines[3])
	if len(f) != 6 || f[0] != "Reading:" || f[2] != "Writing:" || f[4] != "Waiting:" {
		return s, fmt.Errorf("parse stub_status states %q", lines[3])
	}
	for i, dst := range []*uint64{&s.Reading, &s.Writing, &s.Waiting} {
		if *dst, err = strconv.ParseUint(f[2*i+1], 10, 64); err != nil {
			return s, fmt.Errorf("parse stub_status states: %w", err)
		}
	}
	return s, nil
}

// FetchStubStatus reads the stub_status page at url.
func FetchStubStatus(ctx context.Context, client *http.Client, url string) (StubStatus, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return StubStatus{}, fmt.Errorf("fetch stub_status: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return StubStatus{}, fmt.Errorf("fetch stub_status: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return StubStatus{}, fmt.Errorf("read stub_status: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return StubStatus{}, fmt.Errorf("fetch stub_status: %s", resp.Status)
	}
	return ParseStubStatus(string(body))
}

// NginxSample is nginx's traffic at one moment.
type NginxSample struct {
	ActiveConnections uint64
	// Accepts and Handled are stub_status' connection counters.
	Accepts uint64
	Handled uint64
	// TotalRequests is stub_status' request counter.
	TotalRequests uint64
	// Reading, Writing and Waiting are the connections in each state.
	Reading uint64
	Writing uint64
	Waiting uint64
	// RequestsPerSecond is the request rate since the previous sample of
	// the same Collector (0 on the first, or after nginx restarted and its
	// counter went back).
	RequestsPerSecond float64
}

// SystemSample is the host's state at one moment.
type SystemSample struct {
	// CPUPercent is the busy share of all CPUs since the previous sample
	// (0 on the first).
	CPUPercent       float64
	MemoryUsedBytes  uint64
	MemoryTotalBytes uint64
	DiskUsedBytes    uint64
	DiskTotalBytes   uint64
	LoadAverage1m    float64
}

// Options configure a Collector.
type Options struct {
	// DiskPath is the file system whose usage is reported (the agent's
	// data directory).
	DiskPath string
	// ProcDir is the proc file system; default "/proc".
	ProcDir string
	// Client fetches stub_status; default a client with a 2 s timeout.
	Client *http.Client
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Collector samples nginx and the host, keeping the previous counters for
// rates. It is safe for concurrent use.
type Collector struct {
	opts Options

	mu      sync.Mutex
	prevCPU cpuTimes
	// prevHostCPU is Host's own previous sample, so that Host and System
	// rates do not disturb each other.
	prevHostCPU cpuTimes
	prevReq     uint64
	prevTime    time.Time
	hasReq      bool
}

// New returns a Collector.
func New(opts Options) *Collector {
	if opts.ProcDir == "" {
		opts.ProcDir = "/proc"
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 2 * time.Second}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Collector{opts: opts}
}

// Nginx samples stub_status at url.
func (c *Collector) Nginx(ctx context.Context, url string) (NginxSample, error) {
	st, err := FetchStubStatus(ctx, c.opts.Client, url)
	if err != nil {
		return NginxSample{}, err
	}
	now := c.opts.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	s := NginxSample{ActiveConnections: st.Active, Accepts: st.Accepts, Handled: st.Handled, TotalRequests: st.Requests,
		Reading: st.Reading, Writing: st.Writing, Waiting: st.Waiting}
	if c.hasReq && st.Requests >= c.prevReq {
		if dt := now.Sub(c.prevTime).Seconds(); dt > 0 {
			s.RequestsPerSecond = float64(st.Requests-c.prevReq) / dt
		}
	}
	c.prevReq, c.prevTime, c.hasReq = st.Requests, now, true
	return s, nil
}

// System samples the host. Parts that cannot be read are left zero and
// reported in the error; the rest is still returned.
func (c *Collector) System() (SystemSample, error) {
	var s SystemSample
	var errs []error
	if cpu, err := readCPU(c.opts.ProcDir); err != nil {
		errs = append(errs, err)
	} else {
		c.mu.Lock()
		s.CPUPercent = cpu.percentSince(c.prevCPU)
		c.prevCPU = cpu
		c.mu.Unlock()
	}
	if used, total, err := readMemory(c.opts.ProcDir); err != nil {
		errs = append(errs, err)
	} else {
		s.MemoryUsedBytes, s.MemoryTotalBytes = used, total
	}
	if load, err := readLoad(c.opts.ProcDir); err != nil {
		errs = append(errs, err)
	} else {
		s.LoadAverage1m = load
	}
	if c.opts.DiskPath != "" {
		if used, total, err := diskUsage(c.opts.DiskPath); err != nil {
			errs = append(errs, err)
		} else {
			s.DiskUsedBytes, s.DiskTotalBytes = used, total
		}
	}
	return s, errors.Join(errs...)
}

// cpuTimes are the aggregate jiffies of /proc/stat's "cpu" line.
type cpuTimes struct {
	idle, total uint64
}

// percentSince returns the busy percentage between prev and t.
func (t cpuTimes) percentSince(prev cpuTimes) float64 {
	if prev.total == 0 || t.total <= prev.total {
		return 0
	}
	total := float64(t.total - prev.total)
	idle := float64(t.idle - min(t.idle, prev.idle))
	return max(0, min(100, 100*(total-idle)/total))
}

// readCPU reads the "cpu" line of /proc/stat. Idle time includes iowait;
// guest time is already counted in user and nice.
func readCPU(proc string) (cpuTimes, error) {
	f, err := os.Open(proc + "/stat")
	if err != nil {
		return cpuTimes{}, fmt.Errorf("read cpu times: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || fields[0] != "cpu" {
			continue
		}
		var t cpuTimes
		for i, v := range fields[1:] {
			if i >= 8 { // guest and guest_nice are part of user and nice
				break
			}
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return cpuTimes{}, fmt.Errorf("parse cpu times: %w", err)
			}
			t.total += n
			if i == 3 || i == 4 { // idle, iowait
				t.idle += n
			}
		}
		return t, nil
	}
	if err := sc.Err(); err != nil {
		return cpuTimes{}, fmt.Errorf("read cpu times: %w", err)
	}
	return cpuTimes{}, errors.New("read cpu times: no cpu line in /proc/stat")
}

// readMemory returns used (MemTotal - MemAvailable) and total memory.
func readMemory(proc string) (used, total uint64, err error) {
	data, err := os.ReadFile(proc + "/meminfo")
	if err != nil {
		return 0, 0, fmt.Errorf("read meminfo: %w", err)
	}
	var avail uint64
	var haveTotal, haveAvail bool
	for line := range strings.SplitSeq(string(data), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			continue
		}
		if len(f) > 1 && f[1] == "kB" {
			n *= 1024
		}
		switch name {
		case "MemTotal":
			total, haveTotal = n, true
		case "MemAvailable":
			avail, haveAvail = n, true
		}
	}
	if !haveTotal || !haveAvail {
		return 0, 0, errors.New("read meminfo: MemTotal or MemAvailable missing")
	}
	return total - min(avail, total), total, nil
}

// readLoad returns the 1-minute load average.
func readLoad(proc string) (float64, error) {
	data, err := os.ReadFile(proc + "/loadavg")
	if err != nil {
		return 0, fmt.Errorf("read loadavg: %w", err)
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0, errors.New("read loadavg: empty")
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, fmt.Errorf("parse loadavg: %w", err)
	}
	return v, nil
}

// diskUsage returns the used and total bytes of the file system holding
// path, as df counts them (used = total - free).
func diskUsage(path string) (used, total uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	bs := uint64(st.Bsize)
	total = st.Blocks * bs
	free := st.Bfree * bs
	return total - min(free, total), total, nil
}
