package metrics

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"

	"github.com/nxmesh/nxmesh/app"
)

// Notifications of alerts, as River jobs enqueued in the transaction that
// fires or resolves the alert (so none is sent for a rolled-back change,
// and none is lost when the process stops):
//
//   - metrics.alert_channel sends the alert to one notification channel of
//     the rule's organization: a webhook channel as below (signed with the
//     channel's secret), an e-mail channel one message per address. One
//     job is enqueued per channel the rule notifies.
//   - metrics.alert_webhook POSTs the alert as JSON to the rule's webhook,
//     signed X-NxMesh-Signature: sha256=<hex HMAC-SHA256 of the body, keyed
//     with the rule's secret>. Any answer but 2xx, or no answer within
//     webhookTimeout, fails the attempt and River retries it with its
//     backoff, up to notifyAttempts. Redirects are not followed. The
//     connection is refused when the host resolves to a link-local or
//     cloud metadata address (169.254.0.0/16, fe80::/10, fd00:ec2::254),
//     checked on the address actually dialled, so a DNS answer that changes
//     after validation cannot reach them; no proxy is used.
//   - metrics.alert_email sends a plain-text message to one address
//     through the master's SMTP server (smtp.*), retried the same way.
//
// A job whose rule or alert was deleted since, or whose webhook was
// removed, completes without sending. The webhook URL and secret are read
// when the job runs: job arguments never hold the secret.

// ChannelArgs is the job "metrics.alert_channel": tell one notification
// channel of the rule's organization that the alert fired or resolved
// (State). A webhook channel gets the signed POST, an e-mail channel one
// message per address.
type ChannelArgs struct {
	AlertID   uuid.UUID `json:"alert_id"`
	State     string    `json:"state"`
	ChannelID uuid.UUID `json:"channel_id"`
}

// Kind names the job.
func (ChannelArgs) Kind() string { return "metrics.alert_channel" }

// InsertOpts bounds the retries.
func (ChannelArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{MaxAttempts: notifyAttempts}
}

// SendToChannel delivers one alert notification to a notification channel.
// A channel deleted since, or of another organization, is not sent to.
func (s *AlertService) SendToChannel(ctx context.Context, args ChannelArgs) error {
	n, err := s.load(ctx, args.AlertID)
	if err != nil {
		return err
	}
	if !n.exists {
		s.logger.InfoContext(ctx, "alert notification not sent: the rule or the alert is gone", "alert_id", args.AlertID)
		return nil
	}
	c, err := s.channel(ctx, s.pool, args.ChannelID, false)
	if errors.Is(err, ErrChannelNotFound) || (err == nil && c.OrgID != n.rule.OrgID) {
		s.logger.InfoContext(ctx, "alert notification not sent: the channel is gone", "alert_id", args.AlertID, "channel_id", args.ChannelID)
		return nil
	}
	if err != nil {
		return err
	}
	a := asState(n.alert, args.State)
	switch c.Type {
	case ChannelWebhook:
		if c.URL == "" || len(c.Secret) == 0 {
			return nil
		}
		secret, err := s.secrets.Open(c.Secret)
		if err != nil {
			return fmt.Errorf("open secret of notification channel %s: %w", c.ID, err)
		}
		body, err := json.Marshal(WebhookPayload{Type: eventType(a.State), Timestamp: s.now().UTC(), WorkspaceID: a.WorkspaceID, Data: eventData(a)})
		if err != nil {
			return fmt.Errorf("encode webhook of alert %s: %w", a.ID, err)
		}
		return s.webhooks.post(ctx, c.URL, secret, body, eventType(a.State))
	case ChannelEmail:
		if !s.mailer.Configured() {
			return errors.New("send alert e-mail: smtp.host is not configured")
		}
		subject, body := emailText(a)
		for _, to := range c.Addresses {
			if err := s.mailer.Send(ctx, to, subject, body); err != nil {
				return fmt.Errorf("mail alert %s to %s: %w", a.ID, to, err)
			}
		}
	}
	return nil
}

// Delivery bounds.
const (
	webhookTimeout = 10 * time.Second
	notifyAttempts = 10
	// SignatureHeader carries the HMAC of a webhook delivery's body.
	SignatureHeader = "X-NxMesh-Signature"
)

// WebhookArgs is the job "metrics.alert_webhook": tell the rule's webhook
// that the alert fired or resolved (State).
type WebhookArgs struct {
	AlertID uuid.UUID `json:"alert_id"`
	State   string    `json:"state"`
}

// Kind names the job.
func (WebhookArgs) Kind() string { return "metrics.alert_webhook" }

// InsertOpts bounds the retries.
func (WebhookArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{MaxAttempts: notifyAttempts}
}

// EmailArgs is the job "metrics.alert_email": mail To that the alert fired
// or resolved (State).
type EmailArgs struct {
	AlertID uuid.UUID `json:"alert_id"`
	State   string    `json:"state"`
	To      string    `json:"to"`
}

// Kind names the job.
func (EmailArgs) Kind() string { return "metrics.alert_email" }

// InsertOpts bounds the retries.
func (EmailArgs) InsertOpts() river.InsertOpts { return river.InsertOpts{MaxAttempts: notifyAttempts} }

// WebhookPayload is the body of a webhook delivery: the live event.
type WebhookPayload struct {
	Type        string         `json:"type"`
	Timestamp   time.Time      `json:"timestamp"`
	WorkspaceID uuid.UUID      `json:"workspace_id"`
	Data        map[string]any `json:"data"`
}

// Sign is the X-NxMesh-Signature value of body under secret.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// notification is what a job sends: the alert as it stands, and the
// rule's channels.
type notification struct {
	alert  Alert
	rule   ruleRow
	exists bool
}

// load reads the alert and its rule; exists is false when either is gone.
func (s *AlertService) load(ctx context.Context, alertID uuid.UUID) (notification, error) {
	a, err := s.alert(ctx, alertID)
	if err != nil {
		if errors.Is(err, app.ErrNotFound) {
			return notification{}, nil
		}
		return notification{}, err
	}
	if a.RuleID == nil {
		return notification{}, nil
	}
	r, err := s.rule(ctx, nil, *a.RuleID, false)
	if errors.Is(err, ErrRuleNotFound) {
		return notification{}, nil
	}
	if err != nil {
		return notification{}, err
	}
	return notification{alert: a, rule: r, exists: true}, nil
}

// asState returns a as it was announced in state: a resolved alert told
// as fired (a delivery retried after it resolved) keeps its firing figures.
func asState(a Alert, state string) Alert {
	if state == AlertFiring {
		a.State, a.ResolvedAt, a.ResolvedValue = AlertFiring, nil, nil
	}
	return a
}

// SendWebhook delivers one alert notification to its rule's webhook.
func (s *AlertService) SendWebhook(ctx context.Context, args WebhookArgs) error {
	n, err := s.load(ctx, args.AlertID)
	if err != nil {
		return err
	}
	if !n.exists || n.rule.WebhookURL == "" || len(n.rule.Secret) == 0 {
		s.logger.InfoContext(ctx, "alert webhook not sent: the rule, its webhook or the alert is gone", "alert_id", args.AlertID)
		return nil
	}
	secret, err := s.secrets.Open(n.rule.Secret)
	if err != nil {
		return fmt.Errorf("open webhook secret of rule %s: %w", n.rule.ID, err)
	}
	a := asState(n.alert, args.State)
	body, err := json.Marshal(WebhookPayload{Type: eventType(a.State), Timestamp: s.now().UTC(), WorkspaceID: a.WorkspaceID, Data: eventData(a)})
	if err != nil {
		return fmt.Errorf("encode webhook of alert %s: %w", a.ID, err)
	}
	return s.webhooks.post(ctx, n.rule.WebhookURL, secret, body, eventType(a.State))
}

// SendEmail mails one alert notification to args.To.
func (s *AlertService) SendEmail(ctx context.Context, args EmailArgs) error {
	n, err := s.load(ctx, args.AlertID)
	if err != nil {
		return err
	}
	if !n.exists || !contains(n.rule.Emails, args.To) {
		s.logger.InfoContext(ctx, "alert e-mail not sent: the rule, the address or the alert is gone", "alert_id", args.AlertID)
		return nil
	}
	if !s.mailer.Configured() {
		return errors.New("send alert e-mail: smtp.host is not configured")
	}
	a := asState(n.alert, args.State)
	subject, body := emailText(a)
	return s.mailer.Send(ctx, args.To, subject, body)
}

// emailText is the subject and body of an alert's e-mail.
func emailText(a Alert) (string, string) {
	var b strings.Builder
	state := "FIRING"
	if a.State == AlertResolved {
		state = "RESOLVED"
	}
	subject := fmt.Sprintf("[NxMesh %s] %s", state, oneLine(a.RuleName))
	fmt.Fprintf(&b, "%s\n\n", oneLine(a.Message))
	fmt.Fprintf(&b, "State:     %s\n", a.State)
	fmt.Fprintf(&b, "Severity:  %s\n", a.Severity)
	fmt.Fprintf(&b, "Metric:    %s %s %s\n", a.Metric, a.Operator, formatValue(a.Threshold))
	fmt.Fprintf(&b, "Value:     %s\n", formatValue(round(a.Value)))
	fmt.Fprintf(&b, "Fired at:  %s\n", a.FiredAt.UTC().Format(time.RFC3339))
	if a.ResolvedAt != nil {
		fmt.Fprintf(&b, "Resolved:  %s\n", a.ResolvedAt.UTC().Format(time.RFC3339))
		if a.ResolvedValue != nil {
			fmt.Fprintf(&b, "Now:       %s\n", formatValue(round(*a.ResolvedValue)))
		}
	}
	if a.AgentID != nil {
		fmt.Fprintf(&b, "Agent:     %s\n", a.AgentID)
	}
	if a.VirtualHostID != nil {
		fmt.Fprintf(&b, "Virtual host: %s\n", a.VirtualHostID)
	}
	if a.CertificateID != nil {
		fmt.Fprintf(&b, "Certificate: %s\n", a.CertificateID)
	}
	fmt.Fprintf(&b, "Alert:     %s\n", a.ID)
	return subject, b.String()
}

func oneLine(s string) string { return strings.NewReplacer("\r", " ", "\n", " ").Replace(s) }

// ---- Webhook transport ----

// webhookSender posts webhook deliveries; its dialer refuses blocked
// destinations.
type webhookSender struct {
	client *http.Client
}

func newWebhookSender() *webhookSender {
	dialer := &net.Dialer{Timeout: webhookTimeout, Control: refuseBlocked}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   webhookTimeout,
		ResponseHeaderTimeout: webhookTimeout,
		MaxIdleConns:          16,
		IdleConnTimeout:       30 * time.Second,
	}
	return &webhookSender{client: &http.Client{
		Transport: tr,
		Timeout:   webhookTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}}
}

// errBlocked is a dial refused by refuseBlocked.
var errBlocked = errors.New("destination is a link-local or cloud metadata address")

// refuseBlocked is the webhook dialer's Control: it runs on the address
// about to be connected, after name resolution.
func refuseBlocked(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("webhook dial %s: %w", address, err)
	}
	ip := net.ParseIP(host)
	if ip == nil || blockedIP(ip) {
		return fmt.Errorf("webhook dial %s: %w", address, errBlocked)
	}
	return nil
}

var (
	linkLocal4   = &net.IPNet{IP: net.IPv4(169, 254, 0, 0).To4(), Mask: net.CIDRMask(16, 32)}
	awsMetadata6 = net.ParseIP("fd00:ec2::254")
)

// blockedIP reports whether ip is link-local (169.254.0.0/16, fe80::/10,
// link-local multicast) or a cloud metadata address (fd00:ec2::254), also
// written as an IPv4-mapped IPv6 address.
func blockedIP(ip net.IP) bool {
	if v4 := ip.To4(); v4 != nil {
		return linkLocal4.Contains(v4)
	}
	return ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.Equal(awsMetadata6)
}

// post sends body to target signed with secret; a non-2xx answer is an
// error (River retries the job).
func (w *webhookSender) post(ctx context.Context, target string, secret, body []byte, event string) error {
	ctx, cancel := context.WithTimeout(ctx, webhookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "NxMesh-Alerts/1")
	req.Header.Set("X-NxMesh-Event", event)
	req.Header.Set(SignatureHeader, Sign(secret, body))
	resp, err := w.client.Do(req)
	if err != nil {
		return fmt.Errorf("post webhook: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("post webhook: answered %s", resp.Status)
	}
	return nil
}

// ---- Workers ----

type webhookWorker struct {
	river.WorkerDefaults[WebhookArgs]
	svc *AlertService
}

func (w *webhookWorker) Work(ctx context.Context, j *river.Job[WebhookArgs]) error {
	return w.svc.SendWebhook(ctx, j.Args)
}

func (w *webhookWorker) Timeout(*river.Job[WebhookArgs]) time.Duration { return 2 * webhookTimeout }

type channelWorker struct {
	river.WorkerDefaults[ChannelArgs]
	svc *AlertService
}

func (w *channelWorker) Work(ctx context.Context, j *river.Job[ChannelArgs]) error {
	return w.svc.SendToChannel(ctx, j.Args)
}

func (w *channelWorker) Timeout(*river.Job[ChannelArgs]) time.Duration {
	return 2 * webhookTimeout * maxEmails
}

type emailWorker struct {
	river.WorkerDefaults[EmailArgs]
	svc *AlertService
}

func (w *emailWorker) Work(ctx context.Context, j *river.Job[EmailArgs]) error {
	return w.svc.SendEmail(ctx, j.Args)
}

// EvaluateArgs is the periodic job "metrics.alerts": Evaluate, every
// metrics.alert_interval on the elected leader.
type EvaluateArgs struct{}

// Kind names the job.
func (EvaluateArgs) Kind() string { return "metrics.alerts" }

type evaluateWorker struct {
	river.WorkerDefaults[EvaluateArgs]
	svc *AlertService
}

func (w *evaluateWorker) Work(ctx context.Context, _ *river.Job[EvaluateArgs]) error {
	res, err := w.svc.Evaluate(ctx)
	if res.Fired > 0 || res.Resolved > 0 {
		w.svc.logger.InfoContext(ctx, "alert rules evaluated", "rules", res.Rules, "fired", res.Fired, "resolved", res.Resolved)
	}
	return err
}

// Timeout keeps one evaluation shorter than a few intervals.
func (w *evaluateWorker) Timeout(*river.Job[EvaluateArgs]) time.Duration {
	return max(time.Minute, 4*w.svc.interval)
}

// registerJobs adds the alert workers and the evaluation's periodic job.
func (s *AlertService) registerJobs(w *river.Workers) []*river.PeriodicJob {
	river.AddWorker(w, &evaluateWorker{svc: s})
	river.AddWorker(w, &webhookWorker{svc: s})
	river.AddWorker(w, &emailWorker{svc: s})
	river.AddWorker(w, &channelWorker{svc: s})
	return []*river.PeriodicJob{
		river.NewPeriodicJob(river.PeriodicInterval(s.interval),
			func() (river.JobArgs, *river.InsertOpts) {
				// An evaluation not run by the next one is not worth running.
				return EvaluateArgs{}, &river.InsertOpts{MaxAttempts: 1}
			},
			&river.PeriodicJobOpts{ID: EvaluateArgs{}.Kind(), RunOnStart: true}),
	}
}
