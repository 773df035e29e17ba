package views

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/nxmesh/nxmesh/app"
)

// Forms with repeated rows (the servers of an upstream, the locations of a
// virtual host and their headers) name each input after the JSON path of the
// value it holds: servers[1].address, locations[0].custom_headers[2].value. A
// validation error of the service then names the input it belongs to, and
// FormFromError puts its message next to it.
//
// Rows added and removed in the browser leave gaps in the indexes; a handler
// reads the rows present in order (RowIndexes) and renders them back numbered
// from 0, which is also the numbering of the service's errors.

// PostedValues returns the fields of a submitted form, URL-encoded or
// multipart: the first value of each name. Unchecked checkboxes are absent.
func PostedValues(c *fiber.Ctx) map[string]string {
	out := map[string]string{}
	if strings.HasPrefix(string(c.Request().Header.ContentType()), fiber.MIMEMultipartForm) {
		form, err := c.MultipartForm()
		if err != nil {
			return out
		}
		for k, vs := range form.Value {
			if len(vs) > 0 {
				out[k] = vs[0]
			}
		}
		return out
	}
	c.Request().PostArgs().VisitAll(func(k, v []byte) {
		if _, seen := out[string(k)]; !seen {
			out[string(k)] = string(v)
		}
	})
	return out
}

// RowField is the input name of field in row i of the list named prefix:
// RowField("servers", 1, "address") is "servers[1].address".
func RowField(prefix string, i int, field string) string {
	return fmt.Sprintf("%s[%d].%s", prefix, i, field)
}

// RowName is the name of row i of the list named prefix: "servers[1]".
func RowName(prefix string, i int) string {
	return fmt.Sprintf("%s[%d]", prefix, i)
}

// maxRowIndex bounds the indexes RowIndexes accepts; rows are added one at a
// time, so a form never gets near it.
const maxRowIndex = 100_000

// RowIndexes returns the distinct indexes i, ascending, for which values has a
// field named prefix[i].<name>.
func RowIndexes(values map[string]string, prefix string) []int {
	var out []int
	for k := range values {
		rest, ok := strings.CutPrefix(k, prefix+"[")
		if !ok {
			continue
		}
		num, tail, ok := strings.Cut(rest, "]")
		if !ok || !strings.HasPrefix(tail, ".") || num == "" || strings.TrimLeft(num, "0123456789") != "" {
			continue
		}
		i, err := strconv.Atoi(num)
		if err != nil || i > maxRowIndex || strconv.Itoa(i) != num {
			continue
		}
		if !slices.Contains(out, i) {
			out = append(out, i)
		}
	}
	slices.Sort(out)
	return out
}

// Checked reports whether the checkbox name was submitted checked.
func Checked(values map[string]string, name string) bool { return values[name] != "" }

// CheckedValue is the value a form holds for a checkbox: "true" when checked.
func CheckedValue(b bool) string {
	if b {
		return "true"
	}
	return ""
}

// OptionalInt reads a whole number typed into the input for field: empty
// (after trimming spaces) is nil; anything else that is not an integer adds an
// error for field to v and gives nil.
func OptionalInt(v *app.Validator, field, raw string) *int {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil
	}
	n, err := strconv.Atoi(raw)
	if !v.Check(err == nil, field, app.FieldInvalidFormat, "must be a whole number") {
		return nil
	}
	return &n
}

// IntValue is the text of an optional number in an input: "" for nil.
func IntValue(n *int) string {
	if n == nil {
		return ""
	}
	return strconv.Itoa(*n)
}

// rowsAttr is the rows attribute of a text area.
func rowsAttr(n int) string {
	if n <= 0 {
		n = 4
	}
	return strconv.Itoa(n)
}
