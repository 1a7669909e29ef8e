package console

import "net/http"

// eventRoutes are the Events screen's: stored events, one with its
// deliveries, re-run.
func (c *Console) eventRoutes(m *http.ServeMux) {}
