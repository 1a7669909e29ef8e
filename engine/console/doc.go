// Package console is erpflow's web console: the webhook screens of every
// vendor page erpflow grew from (rules with an enabled toggle, add, edit,
// duplicate, test; the Log History of deliveries with every attempt; stored
// events; an overview; the action plugins and their states), served as an
// http.Handler a Go host mounts next to the HTTP API of package httpapi.
//
// The console has no access of its own to the engine or the database:
// every screen is rendered from answers of the API handler it is given,
// called in-process with the browser's own token. So a tenant-bound token
// sees that tenant's rules and deliveries and nothing else, exactly as
// through the API: the console is the tenant portal an ERP can link its
// customers to.
//
// Pages are server-rendered with html/template; interactivity comes from
// htmx (vendored, see assets/htmx-LICENSE.txt) and one small script of our
// own, all embedded, under a strict Content-Security-Policy (no inline
// script or style, no third-party origin). The token is kept in the
// browser's sessionStorage and sent as an Authorization header, never as
// a cookie, so cross-site requests carry no credentials.
//
//	api, _ := httpapi.New(ctx, httpapi.Options{Engine: eng, Actions: reg})
//	ui := console.New(console.Options{API: api})
//	mux := http.NewServeMux()
//	mux.Handle("/ui/", ui)
//	mux.Handle("/", api)
package console
