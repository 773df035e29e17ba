package app

import (
	"context"
	"fmt"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"gorm.io/gorm"
)

// ScopeRow resolves routes addressing a workspace's object by the UUID in
// path parameter param (/v1/upstreams/:id) to its workspace and organization:
// the row of table with that id names its workspace in column wsColumn
// ("workspace_id"; "id" for the workspaces table itself), and the workspace
// its organization. A malformed id or an unknown row is notFound, which
// should wrap ErrNotFound ("no such upstream").
//
// table and wsColumn are SQL identifiers from the module's code, never from a
// request.
//
// The workspaces table's own scope (wsColumn "id") is cached per replica and
// dropped when the workspace changes or goes (see Invalidator); rows of other
// tables may move or go without notice and are read every time.
func ScopeRow(db *gorm.DB, param, table, wsColumn string, notFound error) ScopeFunc {
	cached := table == "workspaces" && wsColumn == "id"
	return func(c *fiber.Ctx) (Scope, error) {
		id, err := ParamUUID(c, param)
		if err != nil {
			return Scope{}, notFound
		}
		if cache, ok := c.Locals(localScopeCache).(*Cache[Scope]); ok && cached {
			return cache.Load(c.UserContext(), TagWorkspace+id.String(), func(ctx context.Context) (Scope, []string, error) {
				s, err := scopeRow(ctx, db, id, table, wsColumn, notFound)
				return s, []string{TagWorkspace + id.String(), TagOrg + s.OrgID.String()}, err
			})
		}
		return scopeRow(c.UserContext(), db, id, table, wsColumn, notFound)
	}
}

func scopeRow(ctx context.Context, db *gorm.DB, id uuid.UUID, table, wsColumn string, notFound error) (Scope, error) {
	var rows []struct {
		WorkspaceID    uuid.UUID
		OrganizationID uuid.UUID
	}
	err := db.WithContext(ctx).Table(table+" AS o").
		Select("w.id AS workspace_id, w.organization_id").
		Joins("JOIN workspaces AS w ON w.id = o."+wsColumn).
		Where("o.id = ?", id).Limit(1).Scan(&rows).Error
	if err != nil {
		return Scope{}, fmt.Errorf("resolve %s %s: %w", table, id, err)
	}
	if len(rows) == 0 {
		return Scope{}, notFound
	}
	return Scope{OrgID: rows[0].OrganizationID, WorkspaceID: rows[0].WorkspaceID}, nil
}

// ScopeOrgRow is ScopeRow for objects that belong to an organization rather
// than a workspace: the row of table with the id in param names its
// organization in column orgColumn ("organization_id"; "id" for the
// organizations table itself). The Scope has no WorkspaceID. The
// organizations table's own scope (orgColumn "id") is cached, as ScopeRow
// caches workspaces.
func ScopeOrgRow(db *gorm.DB, param, table, orgColumn string, notFound error) ScopeFunc {
	cached := table == "organizations" && orgColumn == "id"
	return func(c *fiber.Ctx) (Scope, error) {
		id, err := ParamUUID(c, param)
		if err != nil {
			return Scope{}, notFound
		}
		if cache, ok := c.Locals(localScopeCache).(*Cache[Scope]); ok && cached {
			return cache.Load(c.UserContext(), TagOrg+id.String(), func(ctx context.Context) (Scope, []string, error) {
				s, err := scopeOrgRow(ctx, db, id, table, orgColumn, notFound)
				return s, []string{TagOrg + id.String()}, err
			})
		}
		return scopeOrgRow(c.UserContext(), db, id, table, orgColumn, notFound)
	}
}

func scopeOrgRow(ctx context.Context, db *gorm.DB, id uuid.UUID, table, orgColumn string, notFound error) (Scope, error) {
	var ids []uuid.UUID
	err := db.WithContext(ctx).Table(table).Where("id = ?", id).Limit(1).Pluck(orgColumn, &ids).Error
	if err != nil {
		return Scope{}, fmt.Errorf("resolve %s %s: %w", table, id, err)
	}
	if len(ids) == 0 {
		return Scope{}, notFound
	}
	return Scope{OrgID: ids[0]}, nil
}
