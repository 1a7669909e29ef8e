package httpapi

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/erpflow/erpflow/engine"
)

// TestOutcomeUnknownAnswer: a write whose COMMIT answer was lost and whose
// outcome the store could not tell (it wraps both ErrOutcomeUnknown and
// ErrUnavailable) is a 503 outcome_unknown without Retry-After, since
// retrying blindly could apply it twice; a database merely unavailable
// keeps its Retry-After.
func TestOutcomeUnknownAnswer(t *testing.T) {
	unknown := fmt.Errorf("put rule: %w", fmt.Errorf("%w: %w: COMMIT failed (EOF), and …", engine.ErrUnavailable, engine.ErrOutcomeUnknown))
	ae := internal(unknown)
	if ae.Status != http.StatusServiceUnavailable || ae.Code != "outcome_unknown" || ae.RetryAfter != 0 ||
		!strings.Contains(ae.Message, "look before trying again") || strings.Contains(ae.Message, "EOF") {
		t.Errorf("unknown outcome: %d %s, Retry-After %d: %s", ae.Status, ae.Code, ae.RetryAfter, ae.Message)
	}
	ae = internal(fmt.Errorf("list: %w", engine.ErrUnavailable))
	if ae.Status != http.StatusServiceUnavailable || ae.Code != "unavailable" || ae.RetryAfter != unavailableRetry {
		t.Errorf("unavailable: %d %s, Retry-After %d", ae.Status, ae.Code, ae.RetryAfter)
	}
}
