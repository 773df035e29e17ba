package auth

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
)

// Mailer sends plain-text mail through the SMTP server of the configuration
// (smtp.*). Other modules (invitations) use it too.
type Mailer struct {
	cfg app.SMTPConfig
	// Timeout bounds one delivery when ctx has no earlier deadline.
	Timeout time.Duration
}

// NewMailer returns a Mailer for cfg.
func NewMailer(cfg app.SMTPConfig) *Mailer {
	return &Mailer{cfg: cfg, Timeout: 30 * time.Second}
}

// Configured reports whether outgoing mail is set up (smtp.host). It says
// nothing about whether the server is reachable.
func (m *Mailer) Configured() bool { return m.cfg.Host != "" }

// MailConfigured reports whether the master can send one-time codes by mail
// (smtp.host is set); organizations may require the code only then.
func (s *Service) MailConfigured() bool { return s.mailer.Configured() }

// Send delivers one message to to. The connection is plain, upgraded with
// STARTTLS, or TLS from the start, as smtp.tls says; it authenticates with PLAIN
// when smtp.username is set (Go's PLAIN refuses to send the password over an
// unencrypted connection to anything but localhost).
func (m *Mailer) Send(ctx context.Context, to, subject, body string) error {
	if m.cfg.Host == "" {
		return errors.New("send mail: smtp.host is not configured")
	}
	for _, v := range []string{to, subject, m.cfg.From} {
		if strings.ContainsAny(v, "\r\n") {
			return errors.New("send mail: line break in a header")
		}
	}
	port := m.cfg.Port
	if port == 0 {
		port = 25
	}
	addr := net.JoinHostPort(m.cfg.Host, strconv.Itoa(port))
	ctx, cancel := context.WithTimeout(ctx, m.Timeout)
	defer cancel()

	dialer := &net.Dialer{}
	var conn net.Conn
	var err error
	switch m.cfg.TLS {
	case "tls":
		td := &tls.Dialer{NetDialer: dialer, Config: &tls.Config{ServerName: m.cfg.Host, MinVersion: tls.VersionTLS12}}
		conn, err = td.DialContext(ctx, "tcp", addr)
	case "", "none", "starttls":
		conn, err = dialer.DialContext(ctx, "tcp", addr)
	default:
		return fmt.Errorf("send mail: smtp.tls %q is not none, starttls or tls", m.cfg.TLS)
	}
	if err != nil {
		return fmt.Errorf("send mail: connect %s: %w", addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// Closing the connection when ctx ends interrupts a stalled exchange.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	c, err := smtp.NewClient(conn, m.cfg.Host)
	if err != nil {
		conn.Close()
		return fmt.Errorf("send mail: greeting from %s: %w", addr, err)
	}
	defer c.Close()
	if m.cfg.TLS == "starttls" {
		if err := c.StartTLS(&tls.Config{ServerName: m.cfg.Host, MinVersion: tls.VersionTLS12}); err != nil {
			return fmt.Errorf("send mail: starttls: %w", err)
		}
	}
	if m.cfg.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", m.cfg.Username, m.cfg.Password, m.cfg.Host)); err != nil {
			return fmt.Errorf("send mail: authenticate: %w", err)
		}
	}
	if err := c.Mail(m.cfg.From); err != nil {
		return fmt.Errorf("send mail: MAIL FROM: %w", err)
	}
	if err := c.Rcpt(to); err != nil {
		return fmt.Errorf("send mail: RCPT TO: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("send mail: DATA: %w", err)
	}
	if _, err := w.Write(message(m.cfg.From, to, subject, body, time.Now())); err != nil {
		return fmt.Errorf("send mail: write message: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("send mail: end message: %w", err)
	}
	if err := c.Quit(); err != nil {
		return fmt.Errorf("send mail: QUIT: %w", err)
	}
	return nil
}

// message formats a plain-text RFC 5322 message with CRLF line endings.
func message(from, to, subject, body string, now time.Time) []byte {
	var b bytes.Buffer
	domain := "nxmesh"
	if _, d, ok := strings.Cut(from, "@"); ok && d != "" {
		domain = d
	}
	fmt.Fprintf(&b, "From: %s\r\n", from)
	fmt.Fprintf(&b, "To: %s\r\n", to)
	fmt.Fprintf(&b, "Subject: %s\r\n", subject)
	fmt.Fprintf(&b, "Date: %s\r\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s@%s>\r\n", uuid.NewString(), domain)
	b.WriteString("MIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\n")
	b.WriteString("Content-Transfer-Encoding: 8bit\r\n\r\n")
	for line := range strings.Lines(body) {
		b.WriteString(strings.TrimRight(line, "\r\n"))
		b.WriteString("\r\n")
	}
	return b.Bytes()
}
