package e2e

import (
	"context"
	"net/http"
	"testing"

	"github.com/nxmesh/nxmesh/e2e/apiclient"
)

// TestAPIClient_GeneratedClient drives a running master with the client
// oapi-codegen generates from /v1/openapi.json (e2e/apiclient): it signs in,
// lists the caller's organizations with the access token, and decodes the
// error envelope of a wrong password (the documented default response) and
// of a call without a token.
func TestAPIClient_GeneratedClient(t *testing.T) {
	m := startMaster(t, nil)
	ctx := context.Background()
	c, err := apiclient.NewClientWithResponses(m.baseURL + "/v1")
	if err != nil {
		t.Fatal(err)
	}

	bad, err := c.PostAuthLoginWithResponse(ctx, apiclient.LoginRequest{Email: adminEmail, Password: "wrong-password"})
	if err != nil {
		t.Fatalf("login with a wrong password: %v", err)
	}
	if bad.StatusCode() != http.StatusUnauthorized || bad.JSONDefault == nil || bad.JSONDefault.Error.Code != apiclient.UNAUTHORIZED {
		t.Fatalf("login with a wrong password: status %d, body %s", bad.StatusCode(), bad.Body)
	}

	login, err := c.PostAuthLoginWithResponse(ctx, apiclient.LoginRequest{Email: adminEmail, Password: adminPassword})
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	if login.StatusCode() != http.StatusOK || login.JSON200 == nil || login.JSON200.AccessToken == "" {
		t.Fatalf("login: status %d, body %s", login.StatusCode(), login.Body)
	}
	bearer := func(_ context.Context, req *http.Request) error {
		req.Header.Set("Authorization", "Bearer "+login.JSON200.AccessToken)
		return nil
	}

	anonymous, err := c.GetOrganizationsWithResponse(ctx, nil)
	if err != nil {
		t.Fatalf("list organizations without a token: %v", err)
	}
	if anonymous.StatusCode() != http.StatusUnauthorized || anonymous.JSON401 == nil || anonymous.JSON401.Error.RequestId == "" {
		t.Fatalf("list organizations without a token: status %d, body %s", anonymous.StatusCode(), anonymous.Body)
	}

	perPage := 10
	list, err := c.GetOrganizationsWithResponse(ctx, &apiclient.GetOrganizationsParams{PerPage: &perPage}, bearer)
	if err != nil {
		t.Fatalf("list organizations: %v", err)
	}
	if list.StatusCode() != http.StatusOK || list.JSON200 == nil {
		t.Fatalf("list organizations: status %d, body %s", list.StatusCode(), list.Body)
	}
	page := list.JSON200
	if page.Meta.Total != 1 || page.Meta.PerPage != perPage || len(page.Data) != 1 {
		t.Fatalf("list organizations: %s", list.Body)
	}
	if got := page.Data[0]; got.Id != m.org.ID || got.Slug != m.org.Slug {
		t.Errorf("organization %+v, want id %s slug %s", got, m.org.ID, m.org.Slug)
	}
}
