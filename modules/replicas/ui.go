package replicas

import (
	"net/http"

	"github.com/gofiber/fiber/v2"

	"github.com/nxmesh/nxmesh/views"
)

func (m *Module) uiList(c *fiber.Ctx) error {
	if err := requireSuperadmin(c); err != nil {
		return err
	}
	rs, err := m.list(c.UserContext())
	if err != nil {
		return err
	}
	shell, err := m.pages.Shell(c, "Replicas", "")
	if err != nil {
		return err
	}
	return views.Page(c, http.StatusOK, shell, replicasPage(rs))
}
