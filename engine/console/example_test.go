package console_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/console"
	"github.com/erpflow/erpflow/engine/httpapi"
	"github.com/erpflow/erpflow/engine/store"
)

// A host that embeds the engine mounts the API and the console in its own
// mux: the console's pages call the API in-process with the browser's
// token, so a tenant-bound token sees that tenant's screens only.
func Example() {
	dir, _ := os.MkdirTemp("", "erpflow-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(dir, "erpflow.db"), store.Options{})
	if err != nil {
		panic(err)
	}
	defer st.Close()
	reg := &actions.Registry{}
	reg.Register("webhook", webhook.New(webhook.Options{}))
	eng, _ := engine.New(st, engine.Config{})
	api, err := httpapi.New(ctx, httpapi.Options{Engine: eng, Actions: reg, Tokens: []httpapi.Token{
		{Name: "acme-portal", Token: "acme-secret", Tenant: "acme", Scopes: httpapi.AllScopes},
	}})
	if err != nil {
		panic(err)
	}
	ui, err := console.New(console.Options{API: api, Prefix: "/webhooks", Title: "ACME webhooks"})
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/webhooks/", ui)
	mux.Handle("/v1/", api)
	hs := httptest.NewServer(mux)
	defer hs.Close()

	// What the page's script requests (with the token from the sign-in
	// form) for the rules screen.
	page := func(token string) (int, string) {
		req, _ := http.NewRequest("GET", hs.URL+"/webhooks/rules", nil)
		req.Header.Set("HX-Request", "true")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	code, body := page("")
	fmt.Println(code, strings.Contains(body, `id="signin"`))
	code, body = page("acme-secret")
	fmt.Println(code, strings.Contains(body, "No rules yet"))
	// Output:
	// 401 true
	// 200 true
}
