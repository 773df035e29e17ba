package collect

import (
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// Metrics returns the sample as named metrics (agent/README.md lists the
// names), all stamped ts (Unix seconds).
func (s HostSample) Metrics(ts int64) []*agentv1.Metric {
	var out []*agentv1.Metric
	add := func(name string, v float64, typ agentv1.MetricType, labels map[string]string) {
		out = append(out, &agentv1.Metric{Name: name, Value: v, Timestamp: ts, Labels: labels, Type: typ})
	}
	g, c := agentv1.MetricType_GAUGE, agentv1.MetricType_COUNTER
	add("host.cpu.percent", s.CPUPercent, g, nil)
	for mode, v := range map[string]float64{"user": s.CPU.User, "nice": s.CPU.Nice, "system": s.CPU.System, "idle": s.CPU.Idle,
		"iowait": s.CPU.IOWait, "irq": s.CPU.IRQ, "softirq": s.CPU.SoftIRQ, "steal": s.CPU.Steal} {
		add("host.cpu.seconds", v, c, map[string]string{"mode": mode})
	}
	add("host.load.1m", s.Load1, g, nil)
	add("host.load.5m", s.Load5, g, nil)
	add("host.load.15m", s.Load15, g, nil)
	m := s.Memory
	add("host.memory.total_bytes", float64(m.Total), g, nil)
	add("host.memory.used_bytes", float64(m.Used), g, nil)
	add("host.memory.available_bytes", float64(m.Available), g, nil)
	add("host.memory.free_bytes", float64(m.Free), g, nil)
	add("host.swap.total_bytes", float64(m.SwapTotal), g, nil)
	add("host.swap.used_bytes", float64(m.SwapUsed), g, nil)
	for _, fs := range s.Filesystems {
		l := func() map[string]string {
			return map[string]string{"mount": fs.Mount, "device": fs.Device, "fstype": fs.Type}
		}
		add("host.fs.total_bytes", float64(fs.Total), g, l())
		add("host.fs.used_bytes", float64(fs.Used), g, l())
		add("host.fs.free_bytes", float64(fs.Free), g, l())
	}
	for _, n := range s.Interfaces {
		l := func() map[string]string { return map[string]string{"iface": n.Name} }
		add("host.net.rx_bytes", float64(n.RxBytes), c, l())
		add("host.net.tx_bytes", float64(n.TxBytes), c, l())
		add("host.net.rx_packets", float64(n.RxPackets), c, l())
		add("host.net.tx_packets", float64(n.TxPackets), c, l())
		add("host.net.rx_errors", float64(n.RxErrors), c, l())
		add("host.net.tx_errors", float64(n.TxErrors), c, l())
	}
	return out
}

// Metrics returns nginx's stub_status figures as named metrics: every
// figure of the page (active, accepts, handled, requests, reading, writing,
// waiting) and the request rate.
func (s NginxSample) Metrics(ts int64) []*agentv1.Metric {
	g, c := agentv1.MetricType_GAUGE, agentv1.MetricType_COUNTER
	m := func(name string, v float64, typ agentv1.MetricType) *agentv1.Metric {
		return &agentv1.Metric{Name: name, Value: v, Timestamp: ts, Type: typ}
	}
	return []*agentv1.Metric{
		m("nginx.connections.active", float64(s.ActiveConnections), g),
		m("nginx.connections.accepted", float64(s.Accepts), c),
		m("nginx.connections.handled", float64(s.Handled), c),
		m("nginx.connections.reading", float64(s.Reading), g),
		m("nginx.connections.writing", float64(s.Writing), g),
		m("nginx.connections.waiting", float64(s.Waiting), g),
		m("nginx.requests.total", float64(s.TotalRequests), c),
		m("nginx.requests.per_second", s.RequestsPerSecond, g),
	}
}
