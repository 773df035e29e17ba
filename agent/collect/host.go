package collect

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// userHZ is the kernel's clock tick for /proc/stat (USER_HZ, 100 on Linux).
const userHZ = 100

// CPUTimes are the host's aggregate CPU times in seconds since boot.
type CPUTimes struct {
	User, Nice, System, Idle, IOWait, IRQ, SoftIRQ, Steal float64
}

// Memory is /proc/meminfo in bytes; Used is Total - Available.
type Memory struct {
	Total, Free, Available, Used, SwapTotal, SwapFree, SwapUsed uint64
}

// Filesystem is one mounted file system's usage (df's counting).
type Filesystem struct {
	Mount, Device, Type string
	Total, Used, Free   uint64
}

// NetInterface is one network interface's counters from /proc/net/dev.
type NetInterface struct {
	Name                                  string
	RxBytes, RxPackets, RxErrors, RxDrops uint64
	TxBytes, TxPackets, TxErrors, TxDrops uint64
}

// HostSample is the detailed state of the host at one moment.
type HostSample struct {
	CPU         CPUTimes
	CPUPercent  float64
	Load1       float64
	Load5       float64
	Load15      float64
	Memory      Memory
	Filesystems []Filesystem
	Interfaces  []NetInterface
}

// pseudoFS are file system types that hold no user data.
var pseudoFS = map[string]bool{
	"proc": true, "sysfs": true, "devpts": true, "cgroup": true, "cgroup2": true, "mqueue": true,
	"debugfs": true, "tracefs": true, "securityfs": true, "pstore": true, "bpf": true, "autofs": true,
	"configfs": true, "fusectl": true, "hugetlbfs": true, "binfmt_misc": true, "nsfs": true,
	"rpc_pipefs": true, "selinuxfs": true, "efivarfs": true,
}

// Host samples the host in detail. Parts that cannot be read are left zero
// and reported in the error; the rest is still returned.
func (c *Collector) Host() (HostSample, error) {
	var s HostSample
	var errs []error
	if t, raw, err := readCPUTimes(c.opts.ProcDir); err != nil {
		errs = append(errs, err)
	} else {
		s.CPU = t
		c.mu.Lock()
		s.CPUPercent = raw.percentSince(c.prevHostCPU)
		c.prevHostCPU = raw
		c.mu.Unlock()
	}
	if err := readLoads(c.opts.ProcDir, &s); err != nil {
		errs = append(errs, err)
	}
	if m, err := readMeminfo(c.opts.ProcDir); err != nil {
		errs = append(errs, err)
	} else {
		s.Memory = m
	}
	if fss, err := readFilesystems(c.opts.ProcDir); err != nil {
		errs = append(errs, err)
	} else {
		s.Filesystems = fss
	}
	if ifs, err := readNetDev(c.opts.ProcDir); err != nil {
		errs = append(errs, err)
	} else {
		s.Interfaces = ifs
	}
	return s, errors.Join(errs...)
}

// readCPUTimes reads the "cpu" line of /proc/stat as seconds per mode.
func readCPUTimes(proc string) (CPUTimes, cpuTimes, error) {
	raw, err := readCPU(proc)
	if err != nil {
		return CPUTimes{}, raw, err
	}
	data, err := os.ReadFile(proc + "/stat")
	if err != nil {
		return CPUTimes{}, raw, fmt.Errorf("read cpu times: %w", err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[0] != "cpu" {
			continue
		}
		var v [8]float64
		for i := 0; i < 8 && i+1 < len(f); i++ {
			n, err := strconv.ParseUint(f[i+1], 10, 64)
			if err != nil {
				return CPUTimes{}, raw, fmt.Errorf("parse cpu times: %w", err)
			}
			v[i] = float64(n) / userHZ
		}
		return CPUTimes{User: v[0], Nice: v[1], System: v[2], Idle: v[3], IOWait: v[4], IRQ: v[5], SoftIRQ: v[6], Steal: v[7]}, raw, nil
	}
	return CPUTimes{}, raw, errors.New("read cpu times: no cpu line in /proc/stat")
}

// readLoads reads the 1, 5 and 15 minute load averages.
func readLoads(proc string, s *HostSample) error {
	data, err := os.ReadFile(proc + "/loadavg")
	if err != nil {
		return fmt.Errorf("read loadavg: %w", err)
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return fmt.Errorf("parse loadavg %q", data)
	}
	for i, dst := range []*float64{&s.Load1, &s.Load5, &s.Load15} {
		if *dst, err = strconv.ParseFloat(f[i], 64); err != nil {
			return fmt.Errorf("parse loadavg: %w", err)
		}
	}
	return nil
}

// readMeminfo reads memory and swap from /proc/meminfo.
func readMeminfo(proc string) (Memory, error) {
	data, err := os.ReadFile(proc + "/meminfo")
	if err != nil {
		return Memory{}, fmt.Errorf("read meminfo: %w", err)
	}
	v := map[string]uint64{}
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
		v[name] = n
	}
	total, ok1 := v["MemTotal"]
	avail, ok2 := v["MemAvailable"]
	if !ok1 || !ok2 {
		return Memory{}, errors.New("read meminfo: MemTotal or MemAvailable missing")
	}
	m := Memory{Total: total, Free: v["MemFree"], Available: avail, Used: total - min(avail, total),
		SwapTotal: v["SwapTotal"], SwapFree: v["SwapFree"]}
	m.SwapUsed = m.SwapTotal - min(m.SwapFree, m.SwapTotal)
	return m, nil
}

// readFilesystems lists the mounted file systems (proc/mounts) that hold
// data, once per mount point, with their usage.
func readFilesystems(proc string) ([]Filesystem, error) {
	f, err := os.Open(proc + "/mounts")
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	seen := map[string]bool{}
	var out []Filesystem
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || pseudoFS[fields[2]] || seen[fields[1]] {
			continue
		}
		mount := unescapeMount(fields[1])
		var st syscall.Statfs_t
		if err := syscall.Statfs(mount, &st); err != nil || st.Blocks == 0 {
			continue
		}
		seen[fields[1]] = true
		bs := uint64(st.Bsize)
		total, free := st.Blocks*bs, st.Bfree*bs
		out = append(out, Filesystem{Mount: mount, Device: fields[0], Type: fields[2],
			Total: total, Free: st.Bavail * bs, Used: total - min(free, total)})
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("read mounts: %w", err)
	}
	return out, nil
}

// unescapeMount decodes the octal escapes (\040 for a space) of /proc/mounts.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// readNetDev reads every interface's counters from /proc/net/dev.
func readNetDev(proc string) ([]NetInterface, error) {
	data, err := os.ReadFile(proc + "/net/dev")
	if err != nil {
		return nil, fmt.Errorf("read net/dev: %w", err)
	}
	var out []NetInterface
	for line := range strings.SplitSeq(string(data), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || strings.Contains(name, "|") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 16 {
			continue
		}
		var n [16]uint64
		for i := range n {
			if n[i], err = strconv.ParseUint(f[i], 10, 64); err != nil {
				return out, fmt.Errorf("parse net/dev %s: %w", strings.TrimSpace(name), err)
			}
		}
		out = append(out, NetInterface{Name: strings.TrimSpace(name),
			RxBytes: n[0], RxPackets: n[1], RxErrors: n[2], RxDrops: n[3],
			TxBytes: n[8], TxPackets: n[9], TxErrors: n[10], TxDrops: n[11]})
	}
	return out, nil
}
