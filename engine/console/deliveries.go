package console

import "net/http"

// deliveryRoutes are the Log History's: the list, a delivery's attempts,
// retry and replay.
func (c *Console) deliveryRoutes(m *http.ServeMux) {
	p := c.opts.Prefix
	m.HandleFunc("GET "+p+"/deliveries", c.page(c.deliveriesList))
}

func (c *Console) deliveriesList(x *exchange) {
	var ds deliveriesAnswer
	if !x.get("/v1/deliveries", x.r.URL.Query(), &ds) {
		return
	}
	x.render(http.StatusOK, "deliveries", ds)
}
