package console

import "net/http"

// overview is the landing page: queue depth by state, deliveries per
// minute, success rate and failing destinations.
func (c *Console) overview(x *exchange) {
	var st map[string]any
	if !x.get("/v1/status", nil, &st) {
		return
	}
	x.render(http.StatusOK, "overview", st)
}
