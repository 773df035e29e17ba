package auth

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/views"
)

// The admin's user management (/users, superadmins only) and the caller's own
// account (/account). The handlers call the same service methods as
// /v1/users and /v1/auth/password: disabling a user revokes their sessions,
// refresh tokens and API keys at once, and the last active superadmin cannot
// be disabled or demoted.

// mountAccountUI mounts /users and /account; Routes calls it with the UI router.
func (m *Module) mountAccountUI(ui *app.Router) {
	ui.Get("/users", app.Authenticated(), app.Doc{Summary: "Users page (superadmin)", Query: []string{"q", "page", "per_page"}}, m.uiUsers)
	ui.Post("/users", app.Authenticated(), app.Doc{Summary: "Create a user (form, superadmin)"}, m.uiCreateUser)
	ui.Post("/users/:id/disable", app.Authenticated(), app.Doc{Summary: "Disable a user (form, superadmin)"}, m.uiUserAction)
	ui.Post("/users/:id/enable", app.Authenticated(), app.Doc{Summary: "Enable a user (form, superadmin)"}, m.uiUserAction)
	ui.Post("/users/:id/superadmin", app.Authenticated(), app.Doc{Summary: "Make a user superadmin (form, superadmin)"}, m.uiUserAction)
	ui.Post("/users/:id/superadmin/remove", app.Authenticated(), app.Doc{Summary: "Remove a user's superadmin role (form, superadmin)"}, m.uiUserAction)
	ui.Post("/users/:id/password", app.Authenticated(), app.Doc{Summary: "Reset a user's password (form, superadmin)"}, m.uiResetPassword)
	ui.Get("/account", app.Authenticated(), app.Doc{Summary: "The caller's account page"}, m.uiAccount)
	ui.Post("/account/password", app.Authenticated(), app.Doc{Summary: "Change the caller's password (form)"}, m.uiChangePassword)
}

// usersState is what a re-rendered users page shows besides the list.
type usersState struct {
	create  views.Form
	reset   views.Form
	resetOf uuid.UUID
	row     views.Form
	rowOf   uuid.UUID
}

func (m *Module) uiUsers(c *fiber.Ctx) error {
	if err := requireSuperadmin(c); err != nil {
		return err
	}
	return m.renderUsers(c, http.StatusOK, usersState{})
}

func (m *Module) renderUsers(c *fiber.Ctx, status int, st usersState) error {
	page, err := app.ParsePage(c)
	if err != nil {
		return err
	}
	q := c.Query("q")
	search := views.Form{Values: map[string]string{"q": q}}
	users, total, err := m.svc.SearchUsers(app.Ctx(c), q, page)
	if err != nil {
		var ok bool
		if search, status, ok = views.FormFromError(err, search.Values, "q"); !ok {
			return err
		}
		users, total = nil, 0
	}
	shell, err := m.pages.Shell(c, "Users", "")
	if err != nil {
		return err
	}
	var extra url.Values
	if q != "" {
		extra = url.Values{"q": {q}}
	}
	return views.Page(c, status, shell, usersPage(usersData{
		Users:   users,
		Pager:   views.NewPager(page, total, "/users", extra),
		Query:   q,
		Search:  search,
		Create:  st.create,
		Reset:   st.reset,
		ResetOf: st.resetOf,
		Row:     st.row,
		RowOf:   st.rowOf,
		Self:    app.Caller(c).UserID,
		CSRF:    shell.CSRF,
	}))
}

func (m *Module) uiCreateUser(c *fiber.Ctx) error {
	if err := requireSuperadmin(c); err != nil {
		return err
	}
	vals := map[string]string{"email": c.FormValue("email"), "name": c.FormValue("name"), "is_superadmin": c.FormValue("is_superadmin")}
	u, err := m.svc.CreateUser(app.Ctx(c), CreateUserParams{
		Email: vals["email"], Password: c.FormValue("password"), Name: vals["name"], Superadmin: vals["is_superadmin"] == "true",
	})
	if err != nil {
		form, status, ok := views.FormFromError(err, vals, "email", "password", "name")
		if !ok {
			return err
		}
		return m.renderUsers(c, status, usersState{create: form})
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("User %s created.", u.Email)})
	return views.SeeOther(c, "/users")
}

// uiUserAction disables, enables, promotes or demotes the user of the route.
func (m *Module) uiUserAction(c *fiber.Ctx) error {
	id, err := m.userParam(c)
	if err != nil {
		return err
	}
	yes, no := true, false
	var (
		p    UpdateUserParams
		done string
	)
	switch path := c.Path(); {
	case strings.HasSuffix(path, "/disable"):
		p.Disabled, done = &yes, "disabled"
	case strings.HasSuffix(path, "/enable"):
		p.Disabled, done = &no, "enabled"
	case strings.HasSuffix(path, "/superadmin/remove"):
		p.IsSuperadmin, done = &no, "is no longer a superadmin"
	default:
		p.IsSuperadmin, done = &yes, "is now a superadmin"
	}
	u, err := m.svc.UpdateUser(app.Ctx(c), id, p)
	if err != nil {
		form, status, ok := views.FormFromError(err, nil, "disabled", "is_superadmin")
		if !ok {
			return err
		}
		return m.renderUsers(c, status, usersState{row: form, rowOf: id})
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("User %s %s.", u.Email, done)})
	return views.SeeOther(c, "/users")
}

func (m *Module) uiResetPassword(c *fiber.Ctx) error {
	id, err := m.userParam(c)
	if err != nil {
		return err
	}
	if err := m.svc.SetPassword(app.Ctx(c), id, c.FormValue("password")); err != nil {
		form, status, ok := views.FormFromError(err, nil, "password")
		if !ok {
			return err
		}
		return m.renderUsers(c, status, usersState{reset: form, resetOf: id})
	}
	u, err := m.svc.GetUser(app.Ctx(c), id)
	if err != nil {
		return err
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("Password of %s reset; they are signed out everywhere.", u.Email)})
	return views.SeeOther(c, "/users")
}

func (m *Module) uiAccount(c *fiber.Ctx) error {
	return m.renderAccount(c, http.StatusOK, views.Form{})
}

func (m *Module) renderAccount(c *fiber.Ctx, status int, form views.Form) error {
	caller := app.Caller(c)
	u, err := m.svc.GetUser(app.Ctx(c), caller.UserID)
	if err != nil {
		return err
	}
	shell, err := m.pages.Shell(c, "Account", "")
	if err != nil {
		return err
	}
	return views.Page(c, status, shell, accountPage(accountData{User: u, Form: form, CSRF: shell.CSRF}))
}

func (m *Module) uiChangePassword(c *fiber.Ctx) error {
	caller := app.Caller(c)
	err := m.svc.ChangePassword(app.Ctx(c), ChangePasswordParams{
		UserID: caller.UserID, KeepSessionID: caller.SessionID,
		CurrentPassword: c.FormValue("current_password"), NewPassword: c.FormValue("new_password"),
	})
	if err != nil {
		form, status, ok := views.FormFromError(err, nil, "current_password", "new_password")
		if !ok {
			return err
		}
		return m.renderAccount(c, status, form)
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: "Password changed. Your other sessions are signed out."})
	return views.SeeOther(c, "/account")
}

// first returns the first non-empty string.
func first(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}
