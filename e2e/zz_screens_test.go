//go:build screens

package e2e

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/filesystem"
	"github.com/riverqueue/river"
	"google.golang.org/grpc"
	"net/http"
	"strings"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/auth"
	"github.com/nxmesh/nxmesh/modules/orgs"
	"github.com/nxmesh/nxmesh/static"
	"github.com/nxmesh/nxmesh/views"
)

type staticMod struct{}

func (staticMod) Name() string                                 { return "staticfix" }
func (staticMod) Policies() []authz.Policy                     { return nil }
func (staticMod) Jobs(*river.Workers) []*river.PeriodicJob     { return nil }
func (staticMod) GRPC(grpc.ServiceRegistrar)                   {}
func (staticMod) Routes(r app.Routers) {
	r.Public.Get("/static/*", app.Public(), app.Doc{}, func(c *fiber.Ctx) error {
		return filesystem.SendFile(c, http.FS(static.FS), c.Params("*"))
	})
}

func TestScreens(t *testing.T) {
	ctx := context.Background()
	a := apptest.NewApp(t, func(cfg *app.Config) { cfg.HTTP.SecureCookies = false })
	authMod := auth.New(a.Deps)
	orgsMod := orgs.New(a.Deps, authMod.Service())
	if err := a.Mount(ctx, []app.Module{staticMod{}, authMod, orgsMod}, app.Wiring{
		AuthenticateAPI: authMod.AuthenticateAPI, AuthenticateUI: authMod.AuthenticateUI,
		Role: orgsMod.Service().Role, ErrorPage: views.ErrorPage,
	}); err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go a.Fiber().Listener(ln)
	base := "http://" + ln.Addr().String()
	u, err := authMod.Service().CreateUser(ctx, auth.CreateUserParams{Email: adminEmail, Password: adminPassword, Superadmin: true})
	if err != nil {
		t.Fatal(err)
	}
	org, _, _, err := orgsMod.Service().EnsureDefaultOrganization(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	other, err := authMod.Service().CreateUser(ctx, auth.CreateUserParams{Email: "jane@example.com", Password: adminPassword, Name: "Jane Doe"})
	if err != nil {
		t.Fatal(err)
	}
	_ = other
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath("/usr/bin/chromium"), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 860))
	allocCtx, cancel := chromedp.NewExecAllocator(ctx, opts...)
	defer cancel()
	b, cancel2 := chromedp.NewContext(allocCtx, chromedp.WithErrorf(func(string, ...any) {}))
	defer cancel2()
	b, cancel3 := context.WithTimeout(b, 120*time.Second)
	defer cancel3()
	shot := func(name string) chromedp.Action {
		return chromedp.ActionFunc(func(ctx context.Context) error {
			var png []byte
			if err := chromedp.FullScreenshot(&png, 100).Do(ctx); err != nil {
				return err
			}
			return os.WriteFile("/tmp/screens/"+name+".png", png, 0o644)
		})
	}
	orgURL := base + "/orgs/" + org.ID.String()
	steps := []chromedp.Action{
		chromedp.Navigate(base + "/"),
		chromedp.WaitVisible(`input[name="email"]`),
		shot("01-login"),
		chromedp.SendKeys(`input[name="email"]`, adminEmail),
		chromedp.SendKeys(`input[name="password"]`, "wrong-password"),
		chromedp.Click(`form[action="/login"] button`),
		chromedp.WaitVisible(`.form-error`),
		shot("02-login-error"),
		chromedp.SendKeys(`input[name="password"]`, adminPassword),
		chromedp.Click(`form[action="/login"] button`),
		chromedp.WaitVisible(`#create-workspace`),
		chromedp.SendKeys(`#create-workspace input[name="name"]`, "Production"),
		chromedp.Click(`#create-workspace button[type="submit"]`),
		chromedp.WaitVisible(`//table//a[normalize-space()="Production"]`, chromedp.BySearch),
		shot("03-workspaces"),
		chromedp.SendKeys(`#create-workspace input[name="name"]`, "QA"),
		chromedp.SendKeys(`#create-workspace input[name="slug"]`, "-bad-"),
		chromedp.Click(`#create-workspace button[type="submit"]`),
		chromedp.WaitVisible(`#f-slug-error`),
		shot("04-workspace-error"),
		chromedp.Click(`#org-switcher summary`),
		shot("05-org-switcher"),
		chromedp.Click(`#org-switcher summary`),
		chromedp.Click(`//tr[.//a[normalize-space()="Production"]]//summary`, chromedp.BySearch),
		chromedp.Evaluate(`document.querySelectorAll('details.inline-edit[open] input[name=name]').forEach(e => { e.removeAttribute('required'); e.value = '' })`, nil),
		chromedp.Click(`//tr[.//a[normalize-space()="Production"]]//form//button`, chromedp.BySearch),
		chromedp.WaitVisible(`details.inline-edit[open] small.field-error`),
		shot("05b-rename-error"),
		chromedp.Navigate(orgURL + "/members"),
		chromedp.WaitVisible(`#add-member`),
		chromedp.SendKeys(`#add-member input[name="email"]`, "jane@example.com"),
		chromedp.Click(`#add-member button[type="submit"]`),
		chromedp.WaitVisible(`//td[normalize-space()="jane@example.com"]`, chromedp.BySearch),
		chromedp.SendKeys(`#add-member input[name="email"]`, "nobody@example.com"),
		chromedp.Click(`#add-member button[type="submit"]`),
		chromedp.WaitVisible(`#f-email-error`),
		chromedp.Evaluate(`document.querySelector('select[aria-label="Role of admin@example.com"]').value = 'viewer'`, nil),
		chromedp.Click(`//tr[td[normalize-space()="admin@example.com"]]//form//button`, chromedp.BySearch),
		chromedp.WaitVisible(`//tr[td[normalize-space()="admin@example.com"]]//small[contains(@class,"field-error")]`, chromedp.BySearch),
		shot("06-members"),
		chromedp.Navigate(orgURL + "/api-keys"),
		chromedp.WaitVisible(`#create-api-key`),
		chromedp.SendKeys(`#create-api-key input[name="name"]`, "ci-deploy"),
		chromedp.Click(`#create-api-key button[type="submit"]`),
		chromedp.WaitVisible(`#new-api-key`),
		shot("07-api-keys"),
		chromedp.Navigate(orgURL + "/audit"),
		chromedp.WaitVisible(`form.filters`),
		shot("08-audit"),
		chromedp.Navigate(base + "/orgs"),
		chromedp.WaitVisible(`#create-organization`),
		shot("09-orgs"),
		chromedp.Navigate(orgURL + "/workspaces"),
		chromedp.WaitVisible(`#create-workspace`),
		chromedp.Click(`//table//a[normalize-space()="Production"]`, chromedp.BySearch),
		chromedp.WaitVisible(`.placeholder-grid`),
		shot("10-workspace"),
		chromedp.Navigate(base + "/orgs/00000000-0000-0000-0000-000000000000/workspaces"),
		chromedp.WaitVisible(`.error-page`),
		shot("11-error"),
	}
	for i, s := range steps {
		if err := chromedp.Run(b, s); err != nil {
			var loc string
			_ = chromedp.Run(b, chromedp.Location(&loc))
			t.Fatalf("step %d: %v (at %s)", i, err, loc)
		}
	}
	_ = strings.Contains
}
