package app

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gofiber/fiber/v2"
)

func TestTrackConfigVersion(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		version    int64
		handler    func(c *fiber.Ctx) error
		wantHeader string
		wantBody   string
	}{
		{name: "Object", version: 7, handler: func(c *fiber.Ctx) error { return c.Status(http.StatusCreated).JSON(map[string]any{"id": "a"}) },
			wantHeader: "7", wantBody: `{"config_version":7,"id":"a"}`},
		{name: "EmptyObject", version: 3, handler: func(c *fiber.Ctx) error { return c.JSON(map[string]any{}) },
			wantHeader: "3", wantBody: `{"config_version":3}`},
		{name: "FieldAlreadyThere", version: 4, handler: func(c *fiber.Ctx) error { return c.JSON(map[string]any{"config_version": 4}) },
			wantHeader: "4", wantBody: `{"config_version":4}`},
		{name: "NoBody", version: 5, handler: func(c *fiber.Ctx) error { return c.SendStatus(http.StatusNoContent) },
			wantHeader: "5", wantBody: ``},
		{name: "Array", version: 6, handler: func(c *fiber.Ctx) error { return c.JSON([]int{1}) },
			wantHeader: "6", wantBody: `[1]`},
		{name: "NoVersion", version: 0, handler: func(c *fiber.Ctx) error { return c.JSON(map[string]any{"id": "a"}) },
			wantHeader: "", wantBody: `{"id":"a"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := fiber.New()
			f.Post("/", trackConfigVersion(func(c *fiber.Ctx) error {
				if tc.version > 0 {
					RecordConfigVersion(c.UserContext(), tc.version)
				}
				return tc.handler(c)
			}))
			resp, err := f.Test(httptest.NewRequest(http.MethodPost, "/", nil), -1)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if got := resp.Header.Get(HeaderConfigVersion); got != tc.wantHeader {
				t.Errorf("%s = %q, want %q", HeaderConfigVersion, got, tc.wantHeader)
			}
			if string(body) != tc.wantBody {
				t.Errorf("body %s, want %s", body, tc.wantBody)
			}
		})
	}
	// Outside a tracked request, recording does nothing.
	RecordConfigVersion(context.Background(), 9)
}
