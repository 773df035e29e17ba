package app

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/gofiber/fiber/v2"
)

// HeaderConfigVersion is the response header of a write that created a new
// configuration version of a workspace: the version's number. A JSON object
// answer carries the same number in its field FieldConfigVersion; answers
// without a body (204) only the header.
const HeaderConfigVersion = "X-Config-Version"

// FieldConfigVersion is the field added to the JSON object answering a write
// that created a configuration version.
const FieldConfigVersion = "config_version"

type configVersionKey struct{}

// WithConfigVersionSlot returns a context in which RecordConfigVersion keeps
// the last version recorded, and a function that reads it (0: none).
func WithConfigVersionSlot(ctx context.Context) (context.Context, func() int64) {
	slot := new(atomic.Int64)
	return context.WithValue(ctx, configVersionKey{}, slot), slot.Load
}

// RecordConfigVersion notes, for the request ctx belongs to, that its change
// created configuration version v. Nothing happens outside a route documented
// with Doc.ConfigVersion.
func RecordConfigVersion(ctx context.Context, v int64) {
	if slot, ok := ctx.Value(configVersionKey{}).(*atomic.Int64); ok {
		slot.Store(v)
	}
}

// ConfigVersion is the configuration version the request's change created so
// far (0: none).
func ConfigVersion(c *fiber.Ctx) int64 {
	if slot, ok := c.UserContext().Value(configVersionKey{}).(*atomic.Int64); ok {
		return slot.Load()
	}
	return 0
}

// trackConfigVersion wraps h so that the configuration version its change
// created is answered in HeaderConfigVersion and, when the answer is a JSON
// object without one, in its FieldConfigVersion field.
func trackConfigVersion(h fiber.Handler) fiber.Handler {
	return func(c *fiber.Ctx) error {
		ctx, version := WithConfigVersionSlot(c.UserContext())
		c.SetUserContext(ctx)
		err := h(c)
		v := version()
		if v <= 0 || err != nil {
			return err
		}
		n := strconv.FormatInt(v, 10)
		c.Set(HeaderConfigVersion, n)
		body := c.Response().Body()
		if !strings.HasPrefix(string(c.Response().Header.ContentType()), fiber.MIMEApplicationJSON) ||
			len(body) < 2 || body[0] != '{' {
			return nil
		}
		var fields map[string]json.RawMessage
		if json.Unmarshal(body, &fields) != nil {
			return nil
		}
		if _, ok := fields[FieldConfigVersion]; ok {
			return nil
		}
		out := make([]byte, 0, len(body)+len(FieldConfigVersion)+len(n)+4)
		out = append(out, '{', '"')
		out = append(out, FieldConfigVersion...)
		out = append(out, '"', ':')
		out = append(out, n...)
		if len(fields) > 0 {
			out = append(out, ',')
		}
		out = append(out, body[1:]...)
		c.Response().SetBodyRaw(out)
		return nil
	}
}
