package replicas

import (
	"fmt"

	"github.com/gofiber/fiber/v2"

	"github.com/nxmesh/nxmesh/app"
)

// ErrSuperadminRequired refuses the replicas to everyone but superadmins.
var ErrSuperadminRequired = fmt.Errorf("%w: only superadmins may see the replicas", app.ErrForbidden)

// requireSuperadmin refuses everyone but a signed-in superadmin (API keys
// included: they act within one organization).
func requireSuperadmin(c *fiber.Ctx) error {
	if p := app.Caller(c); p == nil || !p.Superadmin || p.APIKey != nil {
		return ErrSuperadminRequired
	}
	return nil
}

// ReplicaList is the answer of GET /v1/replicas.
type ReplicaList struct {
	Data []app.Replica `json:"data"`
}

func (m *Module) apiList(c *fiber.Ctx) error {
	if err := requireSuperadmin(c); err != nil {
		return err
	}
	rs, err := m.list(app.Ctx(c))
	if err != nil {
		return err
	}
	if rs == nil {
		rs = []app.Replica{}
	}
	return c.JSON(ReplicaList{Data: rs})
}
