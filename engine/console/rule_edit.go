package console

import "net/http"

// ruleRoutes are a rule's screens: add, edit, duplicate, delete, test.
func (c *Console) ruleRoutes(m *http.ServeMux) {}
