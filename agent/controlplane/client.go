// Package controlplane is the agent's side of the AgentService Stream: it
// keeps one stream open to the master, registers, sends heartbeats, and
// hands configuration updates and commands to a Handler.
//
// A connection, from Client.Run's loop:
//
//  1. Load the identity from <data-dir>/identity. Without one, generate an
//     ECDSA P-256 key and a CSR; the connection is server-authenticated
//     TLS, the master trusted through --ca-file or --ca-fingerprint. With
//     one, the connection is mutual TLS with the stored client certificate,
//     the master trusted through the CA it sent at registration.
//  2. Open Stream and send a RegistrationRequest: with the token and the
//     CSR the first time, without a token afterwards (a hello).
//  3. Wait for the RegistrationResponse. A refusal ends the connection with
//     the master's reason. On a first registration, store the key (0600),
//     the signed certificate and the CA before anything else.
//  4. Send a HealthReport at once and every heartbeat interval (the
//     master's, unless Options.Heartbeat overrides it), and at once again
//     whenever ReportHealth asks (an upstream server's health changed).
//  5. Receive: ConfigUpdates go to a single applier goroutine that applies
//     one update at a time; updates that arrive meanwhile replace each
//     other, so the newest wins. Commands run in their own goroutines and
//     answer with a CommandResult.
//  6. When the stream breaks, wait (Backoff: 1 s × 1.6 per failure, ±20 %,
//     at most 120 s; reset after a connection that lived 30 s or a first
//     registration) and go back to 1.
//
// Messages from the master may be as large as Options.MaxMessageBytes (64
// MiB by default, the master's grpc.max_message_bytes default); the agent
// states that limit in its stream's request metadata
// (MaxMessageBytesMetadata) so that the master does not send it anything
// larger, and sends gzip-compressed (the master then answers compressed too).
// A master that does not accept gzip is answered uncompressed from then on.
// A message the agent cannot receive (too large, or not decodable) is logged
// as an error and reported in every HealthReport as the alert
// AlertConfigReceiveFailed until a ConfigUpdate arrives again.
//
// The applier outlives connections: an apply in progress finishes even if
// the stream drops; its statuses are sent on whichever stream is up when
// they are ready (or dropped, and the master's re-sent update is then
// acknowledged as already applied).
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/nxmesh/nxmesh/proto/compress"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// Defaults of Options.
const (
	DefaultHeartbeat   = 10 * time.Second
	DefaultStableAfter = 30 * time.Second
	// DefaultMaxMessageBytes is the largest message exchanged with the master
	// by default: 64 MiB, the master's grpc.max_message_bytes default.
	DefaultMaxMessageBytes = 64 << 20
)

// MaxMessageBytesMetadata is the request metadata key in which the agent
// states, in decimal, the largest message it accepts (the master's
// agents.MaxMessageBytesMetadata).
const MaxMessageBytesMetadata = "nxmesh-max-message-bytes"

// MessageEncodingMetadata is the request metadata key in which the agent
// states the compression of what it sends on the stream (gzip, or absent
// when it sends uncompressed messages); see agents.MessageEncodingMetadata.
const MessageEncodingMetadata = "nxmesh-message-encoding"

// AlertConfigReceiveFailed is the id of the HealthReport alert raised when a
// message from the master could not be received.
const AlertConfigReceiveFailed = "config_receive_failed"

// Handler does what the master asks. Its methods are called from the
// client's goroutines: ApplyConfig from one applier goroutine (never
// concurrently with itself), RunCommand and Health from others.
type Handler interface {
	// ApplyConfig applies u, calling report for every ConfigStatus step
	// (VALIDATING, APPLYING, then SUCCESS, FAILED or ROLLED_BACK).
	ApplyConfig(ctx context.Context, u *agentv1.ConfigUpdate, report func(*agentv1.ConfigStatus))
	// RunCommand runs a command and returns its result.
	RunCommand(ctx context.Context, cmd *agentv1.Command) *agentv1.CommandResult
	// Health returns the report for the next heartbeat.
	Health(ctx context.Context) *agentv1.HealthReport
}

// ACMEHandler is implemented by Handlers that answer ACME HTTP-01
// challenges (MasterMessage.acme_challenge). HandleACMEChallenge is called
// from its own goroutine for each message; the status it returns (its
// challenge_id and token are filled in when empty) is sent on the stream the
// challenge came from. A Handler without it answers every challenge with
// ready false.
type ACMEHandler interface {
	HandleACMEChallenge(ctx context.Context, ch *agentv1.AcmeChallenge) *agentv1.AcmeChallengeStatus
}

// Options configure a Client.
type Options struct {
	// Master is the master's gRPC address, host:port, or several separated
	// by commas (replicas of the master): the client connects to the first
	// and, whenever its stream ends or cannot be opened, to the next one,
	// backing off only once every address failed in a row.
	Master string
	// Token is the registration token, needed only until the agent has an
	// identity.
	Token string
	// CAFile or CAFingerprint ("sha256:<hex>") say how to trust the master
	// before registration.
	CAFile        string
	CAFingerprint string
	// DataDir holds the identity (DataDir/identity).
	DataDir string

	Hostname       string // default os.Hostname()
	Name           string
	Labels         map[string]string
	DeploymentMode agentv1.DeploymentMode
	Version        string
	Capabilities   []string

	// Heartbeat overrides the master's heartbeat interval when non-zero.
	Heartbeat time.Duration
	// Backoff computes reconnect delays; nil means NewBackoff(nil).
	Backoff *Backoff
	// StableAfter is how long a connection must live to reset the
	// backoff. Default 30 s.
	StableAfter time.Duration
	// MaxMessageBytes is the largest message accepted from (and sent to)
	// the master, uncompressed. Default DefaultMaxMessageBytes; it should
	// be at least the master's grpc.max_message_bytes.
	MaxMessageBytes int

	Handler Handler
	// OnAck, if set, receives the master's Acks (of log batches:
	// Ack.message_id is the batch id). It is called from the receive loop
	// and must not block.
	OnAck func(*agentv1.Ack)
	// Logger receives the client's logs; nil means slog.Default(). Tokens
	// and keys are never logged.
	Logger *slog.Logger
}

// Client maintains the stream to the master.
type Client struct {
	opts Options
	log  *slog.Logger
	// masters are the addresses of Options.Master; masterIdx indexes the
	// one in use.
	masters   []string
	masterIdx atomic.Int32

	mu      sync.Mutex
	current *session // the live session, nil while disconnected
	agentID string
	pending *agentv1.ConfigUpdate
	wake    chan struct{}
	// healthNow asks the heartbeat loop for a report before the next tick.
	healthNow chan struct{}

	// receiveAlert is the alert reported while the last message from the
	// master could not be received; nil otherwise.
	receiveAlert *agentv1.Alert
	// uncompressed: the master refused gzip, so the agent no longer uses it.
	uncompressed atomic.Bool

	// commands tracks running commands; Run waits for them.
	commands sync.WaitGroup
}

// New validates opts and returns a Client.
func New(opts Options) (*Client, error) {
	masters, err := ParseMasters(opts.Master)
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	if opts.DataDir == "" {
		return nil, errors.New("controlplane: data directory is required")
	}
	if opts.Handler == nil {
		return nil, errors.New("controlplane: a handler is required")
	}
	if opts.CAFingerprint != "" {
		if _, err := ParseFingerprint(opts.CAFingerprint); err != nil {
			return nil, fmt.Errorf("controlplane: %w", err)
		}
	}
	if opts.Hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("controlplane: hostname: %w", err)
		}
		opts.Hostname = h
	}
	if opts.Backoff == nil {
		opts.Backoff = NewBackoff(nil)
	}
	if opts.StableAfter <= 0 {
		opts.StableAfter = DefaultStableAfter
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Client{
		opts: opts, log: opts.Logger.With("component", "controlplane"), masters: masters,
		wake: make(chan struct{}, 1), healthNow: make(chan struct{}, 1),
	}, nil
}

// ParseMasters splits a comma-separated list of master addresses
// (host:port each), dropping empty entries and duplicates.
func ParseMasters(s string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		if a == "" || seen[a] {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("master address %q: %w", a, err)
		}
		seen[a] = true
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, errors.New("master address is required")
	}
	return out, nil
}

// master is the address of the master the client connects to now.
func (c *Client) master() string { return c.masters[int(c.masterIdx.Load())%len(c.masters)] }

// Master is the address of the master the client is connected or
// connecting to.
func (c *Client) Master() string { return c.master() }

// AgentID returns the agent's id once known (after registration or from
// the stored identity).
func (c *Client) AgentID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.agentID
}

// Connected reports whether a stream to the master is up.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.current != nil
}

// Run connects and reconnects until ctx ends; it returns nil then.
func (c *Client) Run(ctx context.Context) error {
	if id, err := LoadIdentity(c.opts.DataDir); err != nil {
		return fmt.Errorf("controlplane: %w", err)
	} else if id == nil && c.opts.Token == "" {
		return errors.New("controlplane: the agent is not registered yet and no registration token is set")
	} else if id != nil {
		c.setAgentID(id.AgentID)
	}
	var wg sync.WaitGroup
	wg.Go(func() { c.applyLoop(ctx) })
	defer wg.Wait()
	defer c.commands.Wait()
	// failed counts the sessions that ended in a row since one was stable:
	// each moves on to the next master at once, and once every master
	// failed the client backs off.
	failed := 0
	for {
		started := time.Now()
		master := c.master()
		registered, err := c.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if registered || time.Since(started) >= c.opts.StableAfter {
			c.opts.Backoff.Reset()
			failed = 0
		}
		failed++
		c.masterIdx.Store(int32((int(c.masterIdx.Load()) + 1) % len(c.masters)))
		delay := time.Duration(0)
		if failed >= len(c.masters) {
			failed = 0
			delay = c.opts.Backoff.Next()
		}
		c.log.Warn("connection to the master ended; reconnecting", "master", master, "next", c.master(), "error", err, "retry_in", delay.Round(time.Millisecond))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// session is one open stream.
type session struct {
	stream  grpc.BidiStreamingClient[agentv1.AgentMessage, agentv1.MasterMessage]
	agentID string
	mu      sync.Mutex // serialises Send
}

// send sends msg, stamping the agent id and time.
func (s *session) send(msg *agentv1.AgentMessage) error {
	msg.AgentId = s.agentID
	if msg.Timestamp == 0 {
		msg.Timestamp = time.Now().Unix()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stream.Send(msg)
}

func (c *Client) setAgentID(id string) {
	c.mu.Lock()
	c.agentID = id
	c.mu.Unlock()
}

func (c *Client) setSession(s *session) {
	c.mu.Lock()
	c.current = s
	c.mu.Unlock()
}

// sendCurrent sends msg on the live session, if any. It reports whether
// the message was handed to a stream.
func (c *Client) sendCurrent(msg *agentv1.AgentMessage) bool {
	c.mu.Lock()
	s := c.current
	c.mu.Unlock()
	if s == nil {
		return false
	}
	if err := s.send(msg); err != nil {
		c.log.Debug("send to master failed", "error", err)
		return false
	}
	return true
}

// SendEvent sends an agent event to the master if connected.
func (c *Client) SendEvent(ev *agentv1.Event) bool {
	return c.sendCurrent(&agentv1.AgentMessage{Payload: &agentv1.AgentMessage_Event{Event: ev}})
}

// SendMetrics sends a metric batch on the live stream (AgentMessage.metrics)
// if connected; it reports whether the batch was handed to a stream (while
// disconnected batches are dropped).
func (c *Client) SendMetrics(b *agentv1.MetricsBatch) bool {
	return c.sendCurrent(&agentv1.AgentMessage{Payload: &agentv1.AgentMessage_Metrics{Metrics: b}})
}

// SendAccessLogs sends an access-log batch on the live stream
// (AgentMessage.access_logs) if connected; it reports whether the batch was
// handed to a stream. The master acknowledges it with an Ack (OnAck).
func (c *Client) SendAccessLogs(b *agentv1.AccessLogBatch) bool {
	return c.sendCurrent(&agentv1.AgentMessage{Payload: &agentv1.AgentMessage_AccessLogs{AccessLogs: b}})
}

// SendLogs sends an error-log batch on the live stream (AgentMessage.logs)
// if connected, as SendAccessLogs.
func (c *Client) SendLogs(b *agentv1.LogBatch) bool {
	return c.sendCurrent(&agentv1.AgentMessage{Payload: &agentv1.AgentMessage_Logs{Logs: b}})
}

// ReportHealth asks for a HealthReport to be sent now rather than at the
// next heartbeat. Requests made while one is pending are merged; while
// disconnected, the report is the one sent when the next stream opens.
func (c *Client) ReportHealth() {
	select {
	case c.healthNow <- struct{}{}:
	default:
	}
}

// flowWindow is the HTTP/2 flow-control window of the stream and the
// connection to the master.
const flowWindow = 1 << 20

// keepaliveTime and keepaliveTimeout are the connection's keepalive. The
// heartbeats are what finds a dead master: with keepalive on, gRPC sets
// TCP_USER_TIMEOUT to keepaliveTimeout, so a heartbeat the master does not
// acknowledge within it ends the connection (a master gone is noticed
// within one heartbeat interval plus keepaliveTimeout). The PING is left for
// a connection that sends nothing for keepaliveTime, rare because
// heartbeats never stop; answering a PING every 30 s from each of ten
// thousand agents took about a tenth of an idle master's CPU.
const (
	keepaliveTime    = 5 * time.Minute
	keepaliveTimeout = 10 * time.Second
)

// dial opens a gRPC connection with the TLS configuration for id.
func (c *Client) dial(id *Identity) (*grpc.ClientConn, error) {
	cfg, err := c.tlsConfig(id)
	if err != nil {
		return nil, err
	}
	master := c.master()
	conn, err := grpc.NewClient(master,
		grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepaliveTime, Timeout: keepaliveTimeout, PermitWithoutStream: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(c.opts.MaxMessageBytes), grpc.MaxCallSendMsgSize(c.opts.MaxMessageBytes)),
		// Fixed flow-control windows, as the master's: no bandwidth-probing
		// PING after every message received.
		grpc.WithStaticStreamWindowSize(flowWindow),
		grpc.WithStaticConnWindowSize(flowWindow),
	)
	if err != nil {
		return nil, fmt.Errorf("dial master %s: %w", master, err)
	}
	return conn, nil
}

// session runs one connection until the stream breaks or ctx ends. It
// reports whether the agent registered (received its identity) on it.
func (c *Client) session(ctx context.Context) (registered bool, err error) {
	id, err := LoadIdentity(c.opts.DataDir)
	if err != nil {
		return false, err
	}
	conn, err := c.dial(id)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var callOpts []grpc.CallOption
	md := []string{MaxMessageBytesMetadata, strconv.Itoa(c.opts.MaxMessageBytes)}
	if !c.uncompressed.Load() {
		callOpts = append(callOpts, grpc.UseCompressor(compress.Name))
		md = append(md, MessageEncodingMetadata, compress.Name)
	}
	mdctx := metadata.AppendToOutgoingContext(sctx, md...)
	stream, err := agentv1.NewAgentServiceClient(conn).Stream(mdctx, callOpts...)
	if err != nil {
		return false, fmt.Errorf("open stream: %w", err)
	}

	// 2. Register or say hello.
	reg := &agentv1.RegistrationRequest{
		Hostname:       c.opts.Hostname,
		IpAddress:      localIP(c.master()),
		Version:        c.opts.Version,
		Capabilities:   c.opts.Capabilities,
		Labels:         c.opts.Labels,
		DeploymentMode: c.opts.DeploymentMode,
		Name:           c.opts.Name,
	}
	var keyPEM []byte
	if id == nil {
		var csrPEM []byte
		keyPEM, csrPEM, err = newCSR(c.opts.Hostname)
		if err != nil {
			return false, err
		}
		reg.Token = c.opts.Token
		reg.CsrPem = string(csrPEM)
	}
	hello := &session{stream: stream}
	if id != nil {
		hello.agentID = id.AgentID
	}
	if err := hello.send(&agentv1.AgentMessage{Payload: &agentv1.AgentMessage_Registration{Registration: reg}}); err != nil {
		return false, fmt.Errorf("send registration: %w", err)
	}

	// 3. The answer.
	first, err := stream.Recv()
	if err != nil {
		if gzipRefused(err) && !c.uncompressed.Swap(true) {
			c.log.Warn("the master does not accept gzip-compressed messages; sending uncompressed from now on", "error", err)
		}
		c.receiveFailed(err)
		return false, fmt.Errorf("wait for registration response: %w", err)
	}
	resp := first.GetRegistrationResponse()
	if resp == nil {
		return false, fmt.Errorf("master answered the registration with %T instead of a registration response", first.GetPayload())
	}
	if !resp.GetSuccess() {
		if id == nil {
			return false, fmt.Errorf("master refused the registration: %s", resp.GetErrorMessage())
		}
		return false, fmt.Errorf("master refused the connection: %s", resp.GetErrorMessage())
	}
	agentID := resp.GetAgentId()
	if id == nil {
		if resp.GetClientCertificatePem() == "" {
			return false, errors.New("master accepted the registration but sent no client certificate")
		}
		if agentID == "" {
			return false, errors.New("master accepted the registration but sent no agent id")
		}
		if _, err := saveIdentity(c.opts.DataDir, agentID, keyPEM, []byte(resp.GetClientCertificatePem()), []byte(resp.GetCaCertificatePem())); err != nil {
			return false, fmt.Errorf("store identity: %w", err)
		}
		registered = true
		c.log.Info("registered with the master", "agent_id", agentID)
	} else if agentID == "" {
		agentID = id.AgentID
	}
	c.setAgentID(agentID)
	s := &session{stream: stream, agentID: agentID}
	c.setSession(s)
	defer c.setSession(nil)
	c.log.Info("connected to the master", "master", c.master(), "agent_id", agentID, "mtls", id != nil)

	// 4–5. Heartbeats and the receive loop.
	interval := c.opts.Heartbeat
	if interval <= 0 {
		interval = time.Duration(resp.GetHeartbeatIntervalSeconds()) * time.Second
	}
	if interval <= 0 {
		interval = DefaultHeartbeat
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { c.heartbeats(sctx, s, interval, cancel) })
	for {
		msg, err := stream.Recv()
		if err != nil {
			c.receiveFailed(err)
			return registered, fmt.Errorf("receive: %w", err)
		}
		switch p := msg.GetPayload().(type) {
		case *agentv1.MasterMessage_ConfigUpdate:
			c.clearReceiveAlert()
			c.submit(p.ConfigUpdate)
		case *agentv1.MasterMessage_Command:
			// Commands run under the agent's context, not the stream's: a
			// restart must not stop halfway because the stream dropped.
			cmd := p.Command
			c.commands.Go(func() { c.runCommand(ctx, s, cmd) })
		case *agentv1.MasterMessage_AcmeChallenge:
			ch := p.AcmeChallenge
			c.commands.Go(func() { c.answerACME(ctx, s, ch) })
		case *agentv1.MasterMessage_Ack:
			c.log.Debug("master ack", "message_id", p.Ack.GetMessageId(), "success", p.Ack.GetSuccess(), "error", p.Ack.GetErrorMessage())
			if c.opts.OnAck != nil {
				c.opts.OnAck(p.Ack)
			}
		case *agentv1.MasterMessage_Error:
			c.log.Warn("master reported an error", "code", p.Error.GetCode(), "message", p.Error.GetMessage())
		case *agentv1.MasterMessage_RegistrationResponse:
			c.log.Debug("ignoring a second registration response")
		default:
			c.log.Debug("ignoring an unknown master message", "type", fmt.Sprintf("%T", p))
		}
	}
}

// heartbeats sends a HealthReport now, every interval and when
// ReportHealth asks; a failed send ends the session.
func (c *Client) heartbeats(ctx context.Context, s *session, interval time.Duration, fail context.CancelFunc) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		report := c.opts.Handler.Health(ctx)
		if ctx.Err() != nil {
			return
		}
		if a := c.currentReceiveAlert(); a != nil {
			if report = proto.CloneOf(report); report == nil {
				report = &agentv1.HealthReport{}
			}
			report.Alerts = append(report.Alerts, a)
		}
		if err := s.send(&agentv1.AgentMessage{Payload: &agentv1.AgentMessage_Health{Health: report}}); err != nil {
			c.log.Debug("send heartbeat", "error", err)
			fail()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-c.healthNow:
		}
	}
}

// gzipRefused reports whether err is the master refusing gzip-compressed
// messages (a master built without the gzip codec).
func gzipRefused(err error) bool {
	st := status.Convert(err)
	return st.Code() == codes.Unimplemented && strings.Contains(st.Message(), "grpc-encoding") && strings.Contains(st.Message(), compress.Name)
}

// receiveFailed logs and remembers (for the next health reports) a receive
// error that means a message from the master was lost: larger than
// MaxMessageBytes, or not decodable. Other errors are the stream ending.
func (c *Client) receiveFailed(err error) {
	st := status.Convert(err)
	var hint string
	switch {
	case st.Code() == codes.ResourceExhausted:
		hint = "; raise --max-message-bytes (NXMESH_AGENT_MAX_MESSAGE_BYTES) to at least the master's grpc.max_message_bytes"
	case st.Code() == codes.Internal && (strings.Contains(st.Message(), "decompress") || strings.Contains(st.Message(), "unmarshal")):
	default:
		return
	}
	c.log.Error("a message from the master could not be received"+hint, "max_message_bytes", c.opts.MaxMessageBytes, "error", err)
	a := &agentv1.Alert{
		Id: AlertConfigReceiveFailed, Severity: "error", Timestamp: time.Now().Unix(),
		Message: fmt.Sprintf("a message from the master could not be received (this agent accepts %d bytes)%s: %s",
			c.opts.MaxMessageBytes, hint, st.Message()),
	}
	c.mu.Lock()
	c.receiveAlert = a
	c.mu.Unlock()
}

func (c *Client) clearReceiveAlert() {
	c.mu.Lock()
	c.receiveAlert = nil
	c.mu.Unlock()
}

func (c *Client) currentReceiveAlert() *agentv1.Alert {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.receiveAlert == nil {
		return nil
	}
	return proto.CloneOf(c.receiveAlert)
}

// runCommand runs a command and sends its result on the session it came
// from.
func (c *Client) runCommand(ctx context.Context, s *session, cmd *agentv1.Command) {
	c.log.Info("command from the master", "command_id", cmd.GetCommandId(), "command", fmt.Sprintf("%T", cmd.GetCommand()))
	res := c.opts.Handler.RunCommand(ctx, cmd)
	if res == nil {
		res = &agentv1.CommandResult{Success: false, Message: "command not handled"}
	}
	res.CommandId = cmd.GetCommandId()
	if res.FinishedAt == 0 {
		res.FinishedAt = time.Now().Unix()
	}
	if err := s.send(&agentv1.AgentMessage{Payload: &agentv1.AgentMessage_CommandResult{CommandResult: res}}); err != nil {
		c.log.Warn("send command result", "command_id", cmd.GetCommandId(), "error", err)
	}
}

// answerACME hands an ACME challenge to the Handler and sends its status
// on the session it came from.
func (c *Client) answerACME(ctx context.Context, s *session, ch *agentv1.AcmeChallenge) {
	var st *agentv1.AcmeChallengeStatus
	if h, ok := c.opts.Handler.(ACMEHandler); ok {
		st = h.HandleACMEChallenge(ctx, ch)
	}
	if st == nil {
		st = &agentv1.AcmeChallengeStatus{ErrorMessage: "this agent does not answer ACME challenges"}
	}
	if st.ChallengeId == "" {
		st.ChallengeId = ch.GetChallengeId()
	}
	if st.Token == "" {
		st.Token = ch.GetToken()
	}
	if err := s.send(&agentv1.AgentMessage{Payload: &agentv1.AgentMessage_AcmeChallengeStatus{AcmeChallengeStatus: st}}); err != nil {
		c.log.Warn("send ACME challenge status", "challenge_id", ch.GetChallengeId(), "error", err)
	}
}

// submit queues u for the applier, replacing an update not started yet.
func (c *Client) submit(u *agentv1.ConfigUpdate) {
	c.mu.Lock()
	if c.pending != nil {
		c.log.Info("config update superseded before it was applied", "version", c.pending.GetVersion(), "by", u.GetVersion())
	}
	c.pending = u
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// applyLoop applies queued updates one at a time until ctx ends.
func (c *Client) applyLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		}
		c.mu.Lock()
		u := c.pending
		c.pending = nil
		c.mu.Unlock()
		if u == nil {
			continue
		}
		c.opts.Handler.ApplyConfig(ctx, u, func(st *agentv1.ConfigStatus) {
			if !c.sendCurrent(&agentv1.AgentMessage{Payload: &agentv1.AgentMessage_ConfigStatus{ConfigStatus: st}}) {
				c.log.Debug("config status not sent: no connection", "version", st.GetVersion(), "status", st.GetStatus().String())
			}
		})
	}
}

// localIP returns the local address the host would use to reach master
// (no packet is sent), or "" when it cannot tell.
func localIP(master string) string {
	d := net.Dialer{Timeout: 2 * time.Second}
	conn, err := d.Dial("udp", master)
	if err != nil {
		return ""
	}
	defer conn.Close()
	if a, ok := conn.LocalAddr().(*net.UDPAddr); ok {
		return a.IP.String()
	}
	return ""
}
