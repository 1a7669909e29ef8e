package templates

import "strings"

// Closest returns the candidate closest to s by edit distance (ignoring
// case), or "" when none is close enough to be a likely typo: at most 2
// edits (1 for names of 3 letters or fewer). A candidate that s is a prefix
// of (s at least 3 letters) counts as close. The rules loader, the webhook
// action and the templates share it for their "did you mean" hints.
func Closest(s string, candidates []string) string {
	ls := strings.ToLower(s)
	best, bestD := "", 1<<30
	for _, c := range candidates {
		lc := strings.ToLower(c)
		if len(ls) >= 3 && strings.HasPrefix(lc, ls) {
			return c
		}
		if d := editDistance(ls, lc); d < bestD {
			best, bestD = c, d
		}
	}
	limit := 2
	if len(s) <= 3 {
		limit = 1
	}
	if best == "" || bestD > limit {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance over runes; long inputs are
// "far" without computing (names are short; this bounds the work).
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	if len(ra) > 64 || len(rb) > 64 {
		return 1 << 20
	}
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
