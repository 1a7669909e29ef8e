package templates

import "testing"

func TestClosest(t *testing.T) {
	known := []string{"amount", "status", "tenant", "id"}
	for _, c := range []struct{ in, want string }{
		{"amout", "amount"},  // one deletion
		{"STATUS", "status"}, // case ignored
		{"stat", "status"},   // prefix of at least 3 letters
		{"tenat", "tenant"},
		{"ix", "id"},     // short names allow one edit
		{"xyz", ""},      // nothing close
		{"zzzzzzzz", ""}, // too far
		{"ab", ""},       // two edits from "id" is too many for a short name
	} {
		if got := Closest(c.in, known); got != c.want {
			t.Errorf("Closest(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
