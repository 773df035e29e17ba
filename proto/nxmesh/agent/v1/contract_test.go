package agentv1_test

import (
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// seedContract is the original agent contract: message or enum name, then
// name=number for each field or value. Fields added later have new numbers
// and are not listed; these must never change.
const seedContract = `
AgentMessage agent_id=1 timestamp=2 registration=3 health=4 config_status=5 metrics=6 logs=7 event=8
MasterMessage timestamp=1 registration_response=2 config_update=3 command=4 ack=5 error=6
RegistrationRequest token=1 hostname=2 ip_address=3 version=4 capabilities=5 labels=6 deployment_mode=7
RegistrationResponse agent_id=1 success=2 error_message=3 heartbeat_interval_seconds=4
DeploymentMode DEPLOYMENT_MODE_UNSPECIFIED=0 DOCKER_SIDECAR=1 KUBERNETES_SIDECAR=2 STANDALONE=3
HealthReport nginx=1 system=2 config_checksum=3 config_version=4 alerts=5
NginxStatus is_running=1 pid=2 uptime_seconds=3 active_connections=4 total_requests=5 requests_per_second=6
SystemMetrics cpu_percent=1 memory_used_bytes=2 memory_total_bytes=3 disk_used_bytes=4 disk_total_bytes=5 load_average_1m=6
Alert id=1 severity=2 message=3 timestamp=4
ConfigUpdate config_id=1 version=2 virtual_hosts=3 upstreams=4 certificates=5 global_settings=6
VirtualHost id=1 name=2 server_name=3 listen_port=4 ssl_enabled=5 ssl_certificate_id=6 http2_enabled=7 http3_enabled=8 locations=9 custom_directives=10
Location path=1 proxy_pass=2 upstream_id=3 root=4 index=5 custom_headers=6 rewrite_rules=7 custom_directives=8
Header name=1 value=2 always=3
RewriteRule pattern=1 replacement=2 flag=3
Upstream id=1 name=2 algorithm=3 servers=4 health_check=5 keepalive_connections=6
LoadBalanceAlgorithm LOAD_BALANCE_ALGORITHM_UNSPECIFIED=0 ROUND_ROBIN=1 LEAST_CONNECTIONS=2 IP_HASH=3 WEIGHTED_ROUND_ROBIN=4
UpstreamServer address=1 weight=2 backup=3 down=4 max_fails=5 fail_timeout_seconds=6
HealthCheckConfig enabled=1 path=2 interval_seconds=3 timeout_seconds=4 healthy_threshold=5 unhealthy_threshold=6
Certificate id=1 domain=2 certificate_pem=3 private_key_pem=4 expires_at=5
GlobalSettings nginx_directives=1 env_vars=2
ConfigStatus config_id=1 version=2 status=3 error_message=4 applied_at=5
ConfigApplyStatus CONFIG_APPLY_STATUS_UNSPECIFIED=0 PENDING=1 VALIDATING=2 APPLYING=3 SUCCESS=4 FAILED=5 ROLLED_BACK=6
MetricsBatch timestamp=1 metrics=2
Metric name=1 value=2 timestamp=3 labels=4 type=5
MetricType METRIC_TYPE_UNSPECIFIED=0 GAUGE=1 COUNTER=2 HISTOGRAM=3
LogBatch entries=1
LogEntry timestamp=1 level=2 message=3 fields=4
Command command_id=1 reload=2 restart=3 stop=4 get_status=5 validate_config=6
ReloadCommand graceful=1
RestartCommand force=1
StopCommand graceful=1 timeout_seconds=2
GetStatusCommand
ValidateConfigCommand config_content=1
Event event_id=1 event_type=2 timestamp=3 data=4
Ack message_id=1 success=2 error_message=3
Error code=1 message=2 details=3
`

func TestSeedContractIsUnchanged(t *testing.T) {
	t.Parallel()
	file := agentv1.File_nxmesh_agent_v1_agent_proto
	if got := file.Package(); got != "nxmesh.agent.v1" {
		t.Fatalf("package = %s", got)
	}
	for _, line := range strings.Split(strings.TrimSpace(seedContract), "\n") {
		parts := strings.Fields(line)
		name := protoreflect.Name(parts[0])
		t.Run(string(name), func(t *testing.T) {
			t.Parallel()
			msg, enum := file.Messages().ByName(name), file.Enums().ByName(name)
			if msg == nil && enum == nil {
				t.Fatalf("%s is missing", name)
			}
			for _, kv := range parts[1:] {
				field, num, _ := strings.Cut(kv, "=")
				want, err := strconv.Atoi(num)
				if err != nil {
					t.Fatal(err)
				}
				var got int
				switch {
				case msg != nil:
					f := msg.Fields().ByName(protoreflect.Name(field))
					if f == nil {
						t.Errorf("%s.%s is missing", name, field)
						continue
					}
					got = int(f.Number())
				default:
					v := enum.Values().ByName(protoreflect.Name(field))
					if v == nil {
						t.Errorf("%s.%s is missing", name, field)
						continue
					}
					got = int(v.Number())
				}
				if got != want {
					t.Errorf("%s.%s = %d, want %d", name, field, got, want)
				}
			}
		})
	}
}

func TestServiceMethods(t *testing.T) {
	t.Parallel()
	svc := agentv1.File_nxmesh_agent_v1_agent_proto.Services().ByName("AgentService")
	if svc == nil {
		t.Fatal("AgentService is missing")
	}
	for _, m := range []struct {
		name, in, out     string
		clientStr, srvStr bool
	}{
		{"Stream", "AgentMessage", "MasterMessage", true, true},
		{"ReportHealth", "HealthReport", "Ack", false, false},
		{"ReportMetrics", "MetricsBatch", "Ack", false, false},
	} {
		md := svc.Methods().ByName(protoreflect.Name(m.name))
		switch {
		case md == nil:
			t.Errorf("%s is missing", m.name)
		case string(md.Input().Name()) != m.in || string(md.Output().Name()) != m.out ||
			md.IsStreamingClient() != m.clientStr || md.IsStreamingServer() != m.srvStr:
			t.Errorf("%s has the wrong signature", m.name)
		}
	}
}

func TestConfigUpdateRoundTrips(t *testing.T) {
	t.Parallel()
	in := &agentv1.ConfigUpdate{
		ConfigId: "c",
		Version:  7,
		VirtualHosts: []*agentv1.VirtualHost{{
			Id:           "vh",
			RedirectTo:   "https://example.test",
			RedirectCode: 308,
			AccessList:   &agentv1.AccessList{Allow: []string{"10.0.0.0/8"}, BasicAuthUsers: []*agentv1.BasicAuthUser{{Username: "u", PasswordHash: "h"}}},
			RateLimit:    &agentv1.RateLimit{RequestsPerSecond: 5, Burst: 10},
			Locations:    []*agentv1.Location{{Path: "/", Websocket: true}},
		}},
		Streams:  []*agentv1.Stream{{Id: "s", ListenPort: 53, Protocol: agentv1.StreamProtocol_UDP, BandwidthLimit: "1m"}},
		Checksum: "sha256:abc",
	}
	b, err := proto.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	out := &agentv1.ConfigUpdate{}
	if err := proto.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(in, out) {
		t.Errorf("round trip changed the message:\n%v\n%v", in, out)
	}
}
