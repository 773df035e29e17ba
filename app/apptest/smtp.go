package apptest

import (
	"errors"
	"io"
	"net"
	"regexp"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Mailbox is a real SMTP server (go-smtp) on 127.0.0.1 that captures every
// message; it stops when the test ends. Point the master's smtp.host/port at
// Addr.
type Mailbox struct {
	// Addr is the server's host:port.
	Addr string
	user string
	pass string
	ch   chan Mail
}

// Mail is one captured message.
type Mail struct {
	From string
	To   []string
	Data string
}

var codePattern = regexp.MustCompile(`\b(\d{6})\b`)

// Code returns the six-digit one-time code in the message.
func (m Mail) Code(t testing.TB) string {
	t.Helper()
	match := codePattern.FindStringSubmatch(m.Data)
	if match == nil {
		t.Fatalf("no code in message:\n%s", m.Data)
	}
	return match[1]
}

// StartMailbox starts the server. With a user it requires AUTH PLAIN with user
// and pass before MAIL FROM; with user empty it accepts mail without AUTH.
func StartMailbox(t testing.TB, user, pass string) *Mailbox {
	t.Helper()
	mb := &Mailbox{user: user, pass: pass, ch: make(chan Mail, 64)}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &smtpSession{mb: mb}, nil
	}))
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mb.Addr = l.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return mb
}

// Next returns the next captured message, failing after 10 s.
func (m *Mailbox) Next(t testing.TB) Mail {
	t.Helper()
	select {
	case msg := <-m.ch:
		return msg
	case <-time.After(10 * time.Second):
		t.Fatal("no mail arrived")
		return Mail{}
	}
}

// Empty fails the test if a message was captured. Delivery is synchronous with
// the request that sends it, so checking after the response is enough.
func (m *Mailbox) Empty(t testing.TB) {
	t.Helper()
	select {
	case msg := <-m.ch:
		t.Fatalf("unexpected mail to %v:\n%s", msg.To, msg.Data)
	default:
	}
}

type smtpSession struct {
	mb     *Mailbox
	authed bool
	from   string
	to     []string
}

func (s *smtpSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *smtpSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, username, password string) error {
		if s.mb.user == "" || username != s.mb.user || password != s.mb.pass {
			return errors.New("invalid credentials")
		}
		s.authed = true
		return nil
	}), nil
}

func (s *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.mb.user != "" && !s.authed {
		return smtp.ErrAuthRequired
	}
	s.from = from
	return nil
}

func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

func (s *smtpSession) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.mb.ch <- Mail{From: s.from, To: s.to, Data: string(raw)}
	return nil
}

func (s *smtpSession) Reset() { s.from, s.to = "", nil }

func (s *smtpSession) Logout() error { return nil }
