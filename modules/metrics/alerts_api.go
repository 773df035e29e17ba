package metrics

import (
	"bytes"
	"fmt"
	"net/http"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/orgs"
)

// scopeRule resolves an alert rule's workspace and organization.
func (m *Module) scopeRule(param string) app.ScopeFunc {
	return func(c *fiber.Ctx) (app.Scope, error) {
		id, err := app.ParamUUID(c, param)
		if err != nil {
			return app.Scope{}, ErrRuleNotFound
		}
		var rows []struct {
			WorkspaceID    uuid.UUID
			OrganizationID uuid.UUID
		}
		if err := m.db.WithContext(c.UserContext()).Table("alert_rules AS r").
			Select("r.workspace_id, w.organization_id").
			Joins("JOIN workspaces AS w ON w.id = r.workspace_id").
			Where("r.id = ?", id).Limit(1).Scan(&rows).Error; err != nil {
			return app.Scope{}, fmt.Errorf("resolve alert rule %s: %w", id, err)
		}
		if len(rows) == 0 {
			return app.Scope{}, ErrRuleNotFound
		}
		return app.Scope{OrgID: rows[0].OrganizationID, WorkspaceID: rows[0].WorkspaceID}, nil
	}
}

// bindAlertRoutes mounts the alert rules, the alert history, the
// workspace's Prometheus exposition and the live-metrics socket.
func (m *Module) bindAlertRoutes(r app.Routers) {
	ws := orgs.ScopeWorkspace(m.db, "id")
	rule := m.scopeRule("id")
	a := m.alerts
	r.API.Get("/workspaces/:id/alert-rules", app.Require(ObjAlertRule, authz.Read, ws),
		app.Doc{Summary: "List a workspace's alert rules", Response: AlertRule{}, List: true, Query: []string{"page", "per_page"}},
		func(c *fiber.Ctx) error {
			p, err := app.ParsePage(c)
			if err != nil {
				return err
			}
			items, total, err := a.Rules(app.Ctx(c), app.ScopeOf(c).WorkspaceID, p)
			if err != nil {
				return err
			}
			return c.JSON(app.NewList(items, p, total))
		})
	r.API.Post("/workspaces/:id/alert-rules", app.Require(ObjAlertRule, authz.Write, ws),
		app.Doc{Summary: "Create an alert rule: metric, operator (>, >=, <, <=), threshold, for, window, severity, " +
			`scope ({"type":"all"} default, labels with label_selector, agents with agent_ids, virtual_host with virtual_host_id), ` +
			"notify (ids of the organization's notification channels), channels (the rule's own webhook url and secret, emails)",
			Body: AlertRuleInput{}, Response: AlertRule{}, Status: http.StatusCreated},
		func(c *fiber.Ctx) error {
			var in AlertRuleInput
			if err := app.Bind(c, &in); err != nil {
				return err
			}
			out, err := a.CreateRule(app.Ctx(c), app.ScopeOf(c).WorkspaceID, in)
			if err != nil {
				return err
			}
			return c.Status(http.StatusCreated).JSON(out)
		})
	r.API.Get("/alert-rules/:id", app.Require(ObjAlertRule, authz.Read, rule),
		app.Doc{Summary: "Get an alert rule (webhook secrets are never shown)", Response: AlertRule{}},
		func(c *fiber.Ctx) error {
			id, err := app.ParamUUID(c, "id")
			if err != nil {
				return err
			}
			out, err := a.Rule(app.Ctx(c), id)
			if err != nil {
				return err
			}
			return c.JSON(out)
		})
	r.API.Patch("/alert-rules/:id", app.Require(ObjAlertRule, authz.Write, rule),
		app.Doc{Summary: "Change an alert rule; absent fields are kept, scope and notify are replaced when given", Body: AlertRuleInput{}, Response: AlertRule{}},
		func(c *fiber.Ctx) error {
			id, err := app.ParamUUID(c, "id")
			if err != nil {
				return err
			}
			var in AlertRuleInput
			if err := app.Bind(c, &in); err != nil {
				return err
			}
			out, err := a.UpdateRule(app.Ctx(c), id, in)
			if err != nil {
				return err
			}
			return c.JSON(out)
		})
	r.API.Delete("/alert-rules/:id", app.Require(ObjAlertRule, authz.Delete, rule),
		app.Doc{Summary: "Delete an alert rule; its alerts stay in the history", Status: http.StatusNoContent},
		func(c *fiber.Ctx) error {
			id, err := app.ParamUUID(c, "id")
			if err != nil {
				return err
			}
			if err := a.DeleteRule(app.Ctx(c), id); err != nil {
				return err
			}
			return c.SendStatus(http.StatusNoContent)
		})
	r.API.Get("/workspaces/:id/alerts", app.Require(ObjAlert, authz.Read, ws),
		app.Doc{Summary: "A workspace's alert history, newest first (state: firing or resolved; rule_id; agent_id)",
			Response: Alert{}, List: true, Query: AlertQueryNames},
		func(c *fiber.Ctx) error {
			q, err := ParseAlertQuery(func(n string) string { return c.Query(n) })
			if err != nil {
				return err
			}
			if q.Page, err = app.ParsePage(c); err != nil {
				return err
			}
			q.WorkspaceID = app.ScopeOf(c).WorkspaceID
			items, total, err := a.Alerts(app.Ctx(c), q)
			if err != nil {
				return err
			}
			return c.JSON(app.NewList(items, q.Page, total))
		})
	r.API.Get("/workspaces/:id/metrics/prometheus", app.Require(ObjMetrics, authz.Read, ws),
		app.Doc{Summary: "A workspace's traffic per virtual host in the Prometheus text exposition format: request, status class and byte counters, latency histogram", Stream: app.StreamText},
		func(c *fiber.Ctx) error {
			var buf bytes.Buffer
			if err := m.svc.WritePrometheus(app.Ctx(c), app.ScopeOf(c).WorkspaceID, &buf); err != nil {
				return err
			}
			c.Set(fiber.HeaderContentType, "text/plain; version=0.0.4; charset=utf-8")
			return c.Send(buf.Bytes())
		})
	m.bindChannelRoutes(r)
	m.mountSocket(r.API)
}

// bindChannelRoutes mounts an organization's notification channels:
// members read them, admins write and delete them.
func (m *Module) bindChannelRoutes(r app.Routers) {
	org := orgs.ScopeOrg(m.db, "id")
	ch := app.ScopeOrgRow(m.db, "id", "notification_channels", "organization_id", ErrChannelNotFound)
	a := m.alerts
	r.API.Get("/organizations/:id/notification-channels", app.Require(ObjNotificationChannel, authz.Read, org),
		app.Doc{Summary: "List an organization's notification channels (secrets are never shown: secret_set)",
			Response: NotificationChannel{}, List: true, Query: []string{"page", "per_page"}},
		func(c *fiber.Ctx) error {
			p, err := app.ParsePage(c)
			if err != nil {
				return err
			}
			items, total, err := a.Channels(app.Ctx(c), app.ScopeOf(c).OrgID, p)
			if err != nil {
				return err
			}
			return c.JSON(app.NewList(items, p, total))
		})
	r.API.Post("/organizations/:id/notification-channels", app.Require(ObjNotificationChannel, authz.Write, org),
		app.Doc{Summary: "Create a notification channel: name, type webhook (url, write-only secret) or email (addresses)",
			Body: NotificationChannelInput{}, Response: NotificationChannel{}, Status: http.StatusCreated},
		func(c *fiber.Ctx) error {
			var in NotificationChannelInput
			if err := app.Bind(c, &in); err != nil {
				return err
			}
			out, err := a.CreateChannel(app.Ctx(c), app.ScopeOf(c).OrgID, in)
			if err != nil {
				return err
			}
			return c.Status(http.StatusCreated).JSON(out)
		})
	r.API.Get("/notification-channels/:id", app.Require(ObjNotificationChannel, authz.Read, ch),
		app.Doc{Summary: "Get a notification channel (the secret is never shown)", Response: NotificationChannel{}},
		func(c *fiber.Ctx) error {
			id, err := app.ParamUUID(c, "id")
			if err != nil {
				return err
			}
			out, err := a.Channel(app.Ctx(c), id)
			if err != nil {
				return err
			}
			return c.JSON(out)
		})
	r.API.Patch("/notification-channels/:id", app.Require(ObjNotificationChannel, authz.Write, ch),
		app.Doc{Summary: "Change a notification channel; absent fields are kept (the secret too), type cannot change",
			Body: NotificationChannelInput{}, Response: NotificationChannel{}},
		func(c *fiber.Ctx) error {
			id, err := app.ParamUUID(c, "id")
			if err != nil {
				return err
			}
			var in NotificationChannelInput
			if err := app.Bind(c, &in); err != nil {
				return err
			}
			out, err := a.UpdateChannel(app.Ctx(c), id, in)
			if err != nil {
				return err
			}
			return c.JSON(out)
		})
	r.API.Delete("/notification-channels/:id", app.Require(ObjNotificationChannel, authz.Delete, ch),
		app.Doc{Summary: "Delete a notification channel; 409 naming the alert rules that still notify it", Status: http.StatusNoContent},
		func(c *fiber.Ctx) error {
			id, err := app.ParamUUID(c, "id")
			if err != nil {
				return err
			}
			if err := a.DeleteChannel(app.Ctx(c), id); err != nil {
				return err
			}
			return c.SendStatus(http.StatusNoContent)
		})
}
