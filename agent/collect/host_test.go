package collect

import (
	"math"
	"os"
	"path/filepath"
	"testing"
)

func TestCollector_Host(t *testing.T) {
	t.Parallel()

	t.Run("ReadsProcFixtures", func(t *testing.T) {
		t.Parallel()
		proc := t.TempDir()
		write := func(name, text string) {
			p := filepath.Join(proc, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		write("meminfo", "MemTotal: 16000 kB\nMemFree: 1000 kB\nMemAvailable: 4000 kB\nSwapTotal: 2000 kB\nSwapFree: 500 kB\n")
		write("loadavg", "0.52 0.40 0.30 1/200 12345\n")
		write("stat", "cpu  100 0 100 700 100 0 0 0 0 0\n")
		dir := t.TempDir()
		write("mounts", "proc /proc proc rw 0 0\n/dev/test "+dir+" ext4 rw 0 0\n/dev/test "+dir+" ext4 rw 0 0\n")
		write("net/dev", "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n"+
			"    lo: 100 2 0 0 0 0 0 0 100 2 0 0 0 0 0 0\n  eth0: 5000 40 1 2 0 0 0 0 7000 50 3 4 0 0 0 0\n")
		c := New(Options{ProcDir: proc})
		s, err := c.Host()
		if err != nil {
			t.Fatal(err)
		}
		if s.CPU.User != 1 || s.CPU.Idle != 7 || s.CPU.IOWait != 1 || s.CPUPercent != 0 {
			t.Errorf("cpu = %+v, percent %v", s.CPU, s.CPUPercent)
		}
		if s.Load1 != 0.52 || s.Load5 != 0.40 || s.Load15 != 0.30 {
			t.Errorf("load = %v %v %v", s.Load1, s.Load5, s.Load15)
		}
		if m := s.Memory; m.Total != 16000*1024 || m.Used != 12000*1024 || m.Available != 4000*1024 || m.SwapUsed != 1500*1024 {
			t.Errorf("memory = %+v", m)
		}
		if len(s.Filesystems) != 1 || s.Filesystems[0].Mount != dir || s.Filesystems[0].Total == 0 || s.Filesystems[0].Type != "ext4" {
			t.Errorf("filesystems = %+v (pseudo file systems and duplicates must be skipped)", s.Filesystems)
		}
		if len(s.Interfaces) != 2 || s.Interfaces[1] != (NetInterface{Name: "eth0", RxBytes: 5000, RxPackets: 40, RxErrors: 1, RxDrops: 2, TxBytes: 7000, TxPackets: 50, TxErrors: 3, TxDrops: 4}) {
			t.Errorf("interfaces = %+v", s.Interfaces)
		}
		write("stat", "cpu  200 0 150 750 100 0 0 0 0 0\n")
		if s, err = c.Host(); err != nil {
			t.Fatal(err)
		}
		if math.Abs(s.CPUPercent-75) > 1e-9 {
			t.Errorf("CPU = %v, want 75", s.CPUPercent)
		}
	})

	t.Run("ReadsThisHost", func(t *testing.T) {
		t.Parallel()
		c := New(Options{})
		s, err := c.Host()
		if err != nil {
			t.Fatal(err)
		}
		if s.Memory.Total == 0 || s.Memory.Used > s.Memory.Total || s.CPU.User+s.CPU.System+s.CPU.Idle == 0 {
			t.Errorf("sample = %+v", s)
		}
		if len(s.Filesystems) == 0 || len(s.Interfaces) == 0 {
			t.Errorf("filesystems %d, interfaces %d; want at least one of each", len(s.Filesystems), len(s.Interfaces))
		}
		for _, fs := range s.Filesystems {
			if fs.Used > fs.Total {
				t.Errorf("%s: used %d > total %d", fs.Mount, fs.Used, fs.Total)
			}
		}
	})
}

func TestHostSample_Metrics(t *testing.T) {
	t.Parallel()
	s := HostSample{CPUPercent: 12.5, Load1: 1, Memory: Memory{Total: 100, Used: 40},
		Filesystems: []Filesystem{{Mount: "/", Device: "/dev/sda1", Type: "ext4", Total: 10, Used: 4}},
		Interfaces:  []NetInterface{{Name: "eth0", RxBytes: 7}}}
	got := map[string]float64{}
	for _, m := range s.Metrics(99) {
		if m.GetTimestamp() != 99 {
			t.Errorf("%s: timestamp %d", m.GetName(), m.GetTimestamp())
		}
		key := m.GetName()
		if v := m.GetLabels()["mount"]; v != "" {
			key += "{mount=" + v + "}"
		}
		if v := m.GetLabels()["iface"]; v != "" {
			key += "{iface=" + v + "}"
		}
		got[key] = m.GetValue()
	}
	for k, want := range map[string]float64{"host.cpu.percent": 12.5, "host.load.1m": 1, "host.memory.used_bytes": 40,
		"host.memory.total_bytes": 100, "host.fs.used_bytes{mount=/}": 4, "host.net.rx_bytes{iface=eth0}": 7} {
		if v, ok := got[k]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", k, v, ok, want)
		}
	}
}
