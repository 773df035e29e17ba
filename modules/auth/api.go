package auth

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
)

type loginRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

type loginVerifyRequest struct {
	Email string `json:"email"`
	Code  string `json:"code"`
}

type refreshRequest struct {
	RefreshToken string `json:"refresh_token"`
}

type messageResponse struct {
	Message string `json:"message"`
}

type createUserRequest struct {
	Email        string `json:"email"`
	Password     string `json:"password"`
	Name         string `json:"name"`
	IsSuperadmin bool   `json:"is_superadmin"`
}

type changePasswordRequest struct {
	CurrentPassword string `json:"current_password"`
	NewPassword     string `json:"new_password"`
}

type setPasswordRequest struct {
	Password string `json:"password"`
}

type updateUserRequest struct {
	Name              *string `json:"name"`
	Disabled          *bool   `json:"disabled"`
	IsSuperadmin      *bool   `json:"is_superadmin"`
	EmailCodeRequired *bool   `json:"email_code_required"`
}

// bindAuth mounts /v1/auth/*.
func (m *Module) bindAuth(r *app.Router) {
	r.Post("/auth/login", app.Public(), app.Doc{
		Summary: "Sign in with email and password", Body: loginRequest{}, Response: TokenPair{},
	}, m.login)
	r.Post("/auth/login/init", app.Public(), app.Doc{
		Summary: "Check the password and email a one-time code", Body: loginRequest{}, Response: messageResponse{},
	}, m.loginInit)
	r.Post("/auth/login/verify", app.Public(), app.Doc{
		Summary: "Sign in with the emailed one-time code", Body: loginVerifyRequest{}, Response: TokenPair{},
	}, m.loginVerify)
	r.Post("/auth/refresh", app.Public(), app.Doc{
		Summary: "Exchange a refresh token for new tokens", Body: refreshRequest{}, Response: TokenPair{},
	}, m.refresh)
	r.Post("/auth/logout", app.Authenticated(), app.Doc{
		Summary: "End the caller's session", Body: refreshRequest{}, Status: http.StatusNoContent,
	}, m.logout)
	r.Post("/auth/password", app.Authenticated(), app.Doc{
		Summary: "Change the caller's password; other sessions are signed out", Body: changePasswordRequest{}, Status: http.StatusNoContent,
	}, m.changePassword)
}

// bindUsers mounts /v1/users*.
func (m *Module) bindUsers(r *app.Router) {
	r.Get("/users/me", app.Authenticated(), app.Doc{Summary: "The caller's account", Tag: "users", Response: User{}}, m.me)
	r.Get("/users", app.Authenticated(), app.Doc{
		Summary: "List users (superadmin)", Tag: "users", Response: User{}, List: true, Query: []string{"page", "per_page", "q"},
	}, m.listUsers)
	r.Post("/users", app.Authenticated(), app.Doc{
		Summary: "Create a user (superadmin)", Tag: "users", Body: createUserRequest{}, Response: User{}, Status: http.StatusCreated,
	}, m.createUser)
	r.Get("/users/:id", app.Authenticated(), app.Doc{Summary: "Get a user (superadmin)", Tag: "users", Response: User{}}, m.getUser)
	r.Patch("/users/:id", app.Authenticated(), app.Doc{
		Summary: "Update, disable or enable a user (superadmin)", Tag: "users", Body: updateUserRequest{}, Response: User{},
	}, m.updateUser)
	r.Post("/users/:id/password", app.Authenticated(), app.Doc{
		Summary: "Reset a user's password (superadmin); the user is signed out everywhere", Tag: "users",
		Body: setPasswordRequest{}, Status: http.StatusNoContent,
	}, m.resetPassword)
}

func tokenResponse(c *fiber.Ctx, pair TokenPair) error {
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(pair)
}

func (m *Module) login(c *fiber.Ctx) error {
	var req loginRequest
	if err := app.Bind(c, &req); err != nil {
		return err
	}
	pair, err := m.svc.Login(app.Ctx(c), LoginParams{
		Email: req.Email, Password: req.Password, IP: c.IP(), UserAgent: c.Get(fiber.HeaderUserAgent),
	})
	if errors.Is(err, ErrEmailCodeRequired) {
		return emailCodeRequired(c)
	}
	if err != nil {
		return err
	}
	return tokenResponse(c, pair)
}

// emailCodeRequired answers a password login that needs the emailed code: 401
// UNAUTHORIZED with a detail {"field":"code","code":"OTP_REQUIRED"} telling the
// client to switch to /v1/auth/login/init.
func emailCodeRequired(*fiber.Ctx) error {
	return &app.HTTPError{
		Status: http.StatusUnauthorized, Code: app.CodeUnauthorized,
		Message: "A one-time code sent by email is required",
		Details: []app.FieldError{{
			Field: "code", Code: "OTP_REQUIRED",
			Message: "request a code with POST /v1/auth/login/init, then sign in with POST /v1/auth/login/verify",
		}},
	}
}

func (m *Module) loginInit(c *fiber.Ctx) error {
	var req loginRequest
	if err := app.Bind(c, &req); err != nil {
		return err
	}
	masked, err := m.svc.LoginInit(app.Ctx(c), LoginParams{
		Email: req.Email, Password: req.Password, IP: c.IP(), UserAgent: c.Get(fiber.HeaderUserAgent),
	})
	if err != nil {
		return err
	}
	return c.JSON(messageResponse{Message: "One-time code sent to " + masked})
}

func (m *Module) loginVerify(c *fiber.Ctx) error {
	var req loginVerifyRequest
	if err := app.Bind(c, &req); err != nil {
		return err
	}
	pair, err := m.svc.LoginVerify(app.Ctx(c), LoginVerifyParams{
		Email: req.Email, Code: req.Code, IP: c.IP(), UserAgent: c.Get(fiber.HeaderUserAgent),
	})
	if err != nil {
		return err
	}
	return tokenResponse(c, pair)
}

func (m *Module) refresh(c *fiber.Ctx) error {
	var req refreshRequest
	if err := app.Bind(c, &req); err != nil {
		return err
	}
	pair, err := m.svc.Refresh(app.Ctx(c), req.RefreshToken)
	if err != nil {
		return err
	}
	return tokenResponse(c, pair)
}

func (m *Module) logout(c *fiber.Ctx) error {
	var req refreshRequest
	if len(c.Body()) > 0 {
		if err := app.Bind(c, &req); err != nil {
			return err
		}
	}
	if err := m.svc.Logout(app.Ctx(c), app.Caller(c), req.RefreshToken); err != nil {
		return err
	}
	return c.SendStatus(http.StatusNoContent)
}

func (m *Module) me(c *fiber.Ctx) error {
	u, err := m.svc.GetUser(app.Ctx(c), app.Caller(c).UserID)
	if err != nil {
		return err
	}
	return c.JSON(u)
}

// requireSuperadmin refuses user management to everyone else, API keys included.
func requireSuperadmin(c *fiber.Ctx) error {
	if p := app.Caller(c); p == nil || !p.Superadmin || p.APIKey != nil {
		return ErrSuperadminRequired
	}
	return nil
}

func (m *Module) listUsers(c *fiber.Ctx) error {
	if err := requireSuperadmin(c); err != nil {
		return err
	}
	page, err := app.ParsePage(c)
	if err != nil {
		return err
	}
	users, total, err := m.svc.SearchUsers(app.Ctx(c), c.Query("q"), page)
	if err != nil {
		return err
	}
	return c.JSON(app.NewList(users, page, total))
}

func (m *Module) createUser(c *fiber.Ctx) error {
	if err := requireSuperadmin(c); err != nil {
		return err
	}
	var req createUserRequest
	if err := app.Bind(c, &req); err != nil {
		return err
	}
	u, err := m.svc.CreateUser(app.Ctx(c), CreateUserParams{
		Email: req.Email, Password: req.Password, Name: req.Name, Superadmin: req.IsSuperadmin,
	})
	if err != nil {
		return err
	}
	return c.Status(http.StatusCreated).JSON(u)
}

func (m *Module) userParam(c *fiber.Ctx) (uuid.UUID, error) {
	if err := requireSuperadmin(c); err != nil {
		return uuid.Nil, err
	}
	return app.ParamUUID(c, "id")
}

func (m *Module) getUser(c *fiber.Ctx) error {
	id, err := m.userParam(c)
	if err != nil {
		return err
	}
	u, err := m.svc.GetUser(app.Ctx(c), id)
	if err != nil {
		return err
	}
	return c.JSON(u)
}

func (m *Module) updateUser(c *fiber.Ctx) error {
	id, err := m.userParam(c)
	if err != nil {
		return err
	}
	var req updateUserRequest
	if err := app.Bind(c, &req); err != nil {
		return err
	}
	u, err := m.svc.UpdateUser(app.Ctx(c), id, UpdateUserParams(req))
	if err != nil {
		return err
	}
	return c.JSON(u)
}

func (m *Module) changePassword(c *fiber.Ctx) error {
	p := app.Caller(c)
	if p.APIKey != nil {
		return fmt.Errorf("%w: an API key cannot change a password; sign in as the user", app.ErrForbidden)
	}
	var req changePasswordRequest
	if err := app.Bind(c, &req); err != nil {
		return err
	}
	if err := m.svc.ChangePassword(app.Ctx(c), ChangePasswordParams{
		UserID: p.UserID, KeepSessionID: p.SessionID, CurrentPassword: req.CurrentPassword, NewPassword: req.NewPassword,
	}); err != nil {
		return err
	}
	return c.SendStatus(http.StatusNoContent)
}

func (m *Module) resetPassword(c *fiber.Ctx) error {
	id, err := m.userParam(c)
	if err != nil {
		return err
	}
	var req setPasswordRequest
	if err := app.Bind(c, &req); err != nil {
		return err
	}
	if err := m.svc.SetPassword(app.Ctx(c), id, req.Password); err != nil {
		return err
	}
	return c.SendStatus(http.StatusNoContent)
}
