package vhosts

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/views"
)

// The access section of the virtual host form: allow and deny rows, the
// basic-auth users, the per-host rate limit and the allowlisted custom
// directives. Inputs are named like the service's fields
// (access_list.allow[1], access_list.basic_auth_users[0].password,
// rate_limit.burst, custom_directives.gzip), so its errors land next to
// them. Passwords are write-only: the form never holds one it shows.

// Input names of the access section.
const (
	fAllow      = "access_list.allow"
	fDeny       = "access_list.deny"
	fUsers      = "access_list.basic_auth_users"
	fRealm      = "access_list.realm"
	fRateLimit  = "rate_limit"
	fRPS        = "rate_limit.requests_per_second"
	fBurst      = "rate_limit.burst"
	fDirectives = "custom_directives"
)

// Empty rows the form shows after the typed ones; "Add" buttons add more.
const (
	spareAddressRows = 2
	spareUserRows    = 1
)

// Editor steps of the access section.
const (
	stepAddAllow = "add-allow"
	stepAddDeny  = "add-deny"
	stepAddUser  = "add-user"
)

// userRow is one basic-auth user as typed. Password is what was typed in
// this submission; it is never rendered back.
type userRow struct {
	Username, Password string
	Remove             bool
}

func (u userRow) blank() bool { return strings.TrimSpace(u.Username) == "" && u.Password == "" }

// accessForm is the access section as typed.
type accessForm struct {
	Allow, Deny []string
	Users       []userRow
	Realm       string
	RPS, Burst  string
	// Directives are the custom directives' values by name; a directive
	// without a value is not set.
	Directives map[string]string
}

func allowField(i int) string        { return fmt.Sprintf("%s[%d]", fAllow, i) }
func denyField(i int) string         { return fmt.Sprintf("%s[%d]", fDeny, i) }
func directiveField(n string) string { return fDirectives + "." + n }

func userField(i int, field string) string { return views.RowField(fUsers, i, field) }

func accessFormOf(v VirtualHost) accessForm {
	f := accessForm{Directives: maps.Clone(v.CustomDirectives)}
	if al := v.AccessList; al != nil {
		f.Allow, f.Deny, f.Realm = slices.Clone(al.Allow), slices.Clone(al.Deny), al.Realm
		for _, u := range al.BasicAuthUsers {
			f.Users = append(f.Users, userRow{Username: u.Username})
		}
	}
	if rl := v.RateLimit; rl != nil {
		f.RPS, f.Burst = strconv.Itoa(rl.RequestsPerSecond), strconv.Itoa(rl.Burst)
	}
	return f
}

// listIndexes returns the distinct indexes i, ascending, for which vals has
// an input named prefix[i].
func listIndexes(vals map[string]string, prefix string) []int {
	var out []int
	for k := range vals {
		rest, ok := strings.CutPrefix(k, prefix+"[")
		if !ok {
			continue
		}
		num, ok := strings.CutSuffix(rest, "]")
		if !ok || num == "" || len(num) > 6 || strings.TrimLeft(num, "0123456789") != "" {
			continue
		}
		i, err := strconv.Atoi(num)
		if err != nil || strconv.Itoa(i) != num {
			continue
		}
		out = append(out, i)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// readAddresses reads the rows of an address list in index order, blank ones
// dropped.
func readAddresses(vals map[string]string, prefix string) []string {
	var out []string
	for _, i := range listIndexes(vals, prefix) {
		if s := strings.TrimSpace(vals[fmt.Sprintf("%s[%d]", prefix, i)]); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// readAccessForm reads the access section of a submitted form. Only the
// allowlisted custom directives are read.
func readAccessForm(vals map[string]string) accessForm {
	f := accessForm{
		Allow:      readAddresses(vals, fAllow),
		Deny:       readAddresses(vals, fDeny),
		Realm:      vals[fRealm],
		RPS:        vals[fRPS],
		Burst:      vals[fBurst],
		Directives: map[string]string{},
	}
	for _, i := range views.RowIndexes(vals, fUsers) {
		u := userRow{
			Username: vals[userField(i, "username")],
			Password: vals[userField(i, "password")],
			Remove:   views.Checked(vals, userField(i, "remove")),
		}
		if !u.blank() {
			f.Users = append(f.Users, u)
		}
	}
	for _, name := range customDirectiveNames() {
		if s := strings.TrimSpace(vals[directiveField(name)]); s != "" {
			f.Directives[name] = s
		}
	}
	return f
}

// applyStep adds the row an "add-..." step asks for.
func (f *accessForm) applyStep(step string) {
	switch step {
	case stepAddAllow:
		f.Allow = append(f.Allow, "")
	case stepAddDeny:
		f.Deny = append(f.Deny, "")
	case stepAddUser:
		f.Users = append(f.Users, userRow{})
	}
}

// allowRows, denyRows and userRows are the rows the form shows: the typed
// ones and the spare empty ones.
func (f accessForm) allowRows() []string {
	return append(slices.Clone(f.Allow), make([]string, spareAddressRows)...)
}
func (f accessForm) denyRows() []string {
	return append(slices.Clone(f.Deny), make([]string, spareAddressRows)...)
}
func (f accessForm) userRows() []userRow {
	return append(slices.Clone(f.Users), make([]userRow, spareUserRows)...)
}

// values adds the section's inputs to v. Password inputs are always empty.
func (f accessForm) values(v map[string]string) {
	for i, s := range f.Allow {
		v[allowField(i)] = s
	}
	for i, s := range f.Deny {
		v[denyField(i)] = s
	}
	for i, u := range f.Users {
		v[userField(i, "username")] = u.Username
		v[userField(i, "password")] = ""
		v[userField(i, "remove")] = views.CheckedValue(u.Remove)
	}
	v[fRealm] = f.Realm
	v[fRPS], v[fBurst] = f.RPS, f.Burst
	for _, name := range customDirectiveNames() {
		v[directiveField(name)] = f.Directives[name]
	}
}

// errorFields are the names above lists that errors are shown at.
func (f accessForm) errorFields() []string {
	return []string{fAllow, fDeny, fUsers, fRateLimit, fDirectives}
}

// kept are the indexes of the user rows that go to the service, in order:
// every row but the removed ones.
func (f accessForm) kept() []int {
	var out []int
	for i, u := range f.Users {
		if !u.Remove {
			out = append(out, i)
		}
	}
	return out
}

// apply sets the access list, rate limit and custom directives of in.
func (f accessForm) apply(v *app.Validator, in *VirtualHostInput) {
	al := &AccessList{
		Allow:          slices.Clone(f.Allow),
		Deny:           slices.Clone(f.Deny),
		BasicAuthUsers: []BasicAuthUser{},
		Realm:          strings.TrimSpace(f.Realm),
	}
	for _, i := range f.kept() {
		u := f.Users[i]
		al.BasicAuthUsers = append(al.BasicAuthUsers, BasicAuthUser{Username: strings.TrimSpace(u.Username), Password: u.Password})
	}
	in.AccessList = nil
	if len(al.Allow)+len(al.Deny)+len(al.BasicAuthUsers) > 0 || al.Realm != "" {
		in.AccessList = al
	}
	rps := views.OptionalInt(v, fRPS, f.RPS)
	burst := views.OptionalInt(v, fBurst, f.Burst)
	in.RateLimit = nil
	if rps != nil || burst != nil {
		in.RateLimit = &RateLimit{}
		if rps != nil {
			in.RateLimit.RequestsPerSecond = *rps
		}
		if burst != nil {
			in.RateLimit.Burst = *burst
		}
	}
	in.CustomDirectives = maps.Clone(f.Directives)
	if in.CustomDirectives == nil {
		in.CustomDirectives = map[string]string{}
	}
}

// formErrors renames the service's errors of basic-auth users, numbered
// among the users sent (removed rows are not), to the rows of the form.
func (f accessForm) formErrors(err error) error {
	var ve *app.ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	kept := f.kept()
	out := &app.ValidationError{Fields: slices.Clone(ve.Fields)}
	for n, fe := range out.Fields {
		rest, ok := strings.CutPrefix(fe.Field, fUsers+"[")
		if !ok {
			continue
		}
		num, tail, ok := strings.Cut(rest, "]")
		i, err := strconv.Atoi(num)
		if !ok || err != nil || i < 0 || i >= len(kept) {
			continue
		}
		out.Fields[n].Field = fmt.Sprintf("%s[%d]%s", fUsers, kept[i], tail)
	}
	return out
}

// directiveInput describes one allowlisted custom directive in the form.
type directiveInput struct {
	Name, Grammar string
	// Options are set for on | off directives: a select.
	Options []views.Option
}

var keywordPattern = regexp.MustCompile(`^[a-z0-9.]+$`)

// directiveOptions are the choices of a directive whose grammar is a list of
// keywords ("on | off", "1.0 | 1.1"), after "not set"; nil for any other
// grammar.
func directiveOptions(grammar string) []views.Option {
	words := strings.Split(grammar, " | ")
	out := []views.Option{{Value: "", Label: "not set"}}
	for _, w := range words {
		if !keywordPattern.MatchString(w) {
			return nil
		}
		out = append(out, views.Option{Value: w, Label: w})
	}
	return out
}

// directiveInputs are the allowlisted custom directives, by name.
func directiveInputs() []directiveInput {
	out := make([]directiveInput, 0, len(CustomDirectives))
	for _, name := range customDirectiveNames() {
		d := directiveInput{Name: name, Grammar: CustomDirectives[name].Value}
		d.Options = directiveOptions(d.Grammar)
		out = append(out, d)
	}
	return out
}

// storedUser reports whether the host being edited has a basic-auth user
// named name (whose password an empty input keeps).
func (d vhostFormData) storedUser(name string) bool {
	if d.VirtualHost == nil || d.VirtualHost.AccessList == nil || name == "" {
		return false
	}
	return slices.ContainsFunc(d.VirtualHost.AccessList.BasicAuthUsers, func(u BasicAuthUser) bool { return u.Username == name })
}

// accessOpen reports whether the access section starts unfolded: it holds
// settings or errors.
func (d vhostFormData) accessOpen() bool {
	a := d.Shape.Access
	if len(a.Allow)+len(a.Deny)+len(a.Users) > 0 || a.Realm != "" {
		return true
	}
	return d.hasErrorUnder(fAllow, fDeny, fUsers, fRealm)
}

// limitsOpen reports whether the rate limit and custom directives section
// starts unfolded.
func (d vhostFormData) limitsOpen() bool {
	a := d.Shape.Access
	if a.RPS != "" || a.Burst != "" || len(a.Directives) > 0 {
		return true
	}
	return d.hasErrorUnder(fRateLimit, fDirectives)
}

func (d vhostFormData) hasErrorUnder(prefixes ...string) bool {
	for name := range d.Form.Errors {
		for _, p := range prefixes {
			if strings.HasPrefix(name, p) {
				return true
			}
		}
	}
	return false
}
