package webhook

import (
	"fmt"
	"testing"
)

// TestTokenCachesBounded: a Factory keeps at most maxTokenCaches token
// caches for sharing (rules replaced with ever new client secrets piled
// them up); a config keeps the cache it was given, and the same grant
// still shares one while it is kept.
func TestTokenCachesBounded(t *testing.T) {
	f := New(Options{})
	cl := &client{}
	var key [32]byte
	first := f.tokenCacheFor(&oauthSettings{tokenURL: "https://idp.example/token", clientID: "c", clientSecret: "s0"}, cl, key)
	if again := f.tokenCacheFor(&oauthSettings{tokenURL: "https://idp.example/token", clientID: "c", clientSecret: "s0"}, cl, key); again != first {
		t.Fatal("the same grant got a second cache")
	}
	for i := 1; i <= maxTokenCaches+10; i++ {
		f.tokenCacheFor(&oauthSettings{tokenURL: "https://idp.example/token", clientID: "c", clientSecret: fmt.Sprint("s", i)}, cl, key)
	}
	f.mu.Lock()
	n := len(f.tokens)
	f.mu.Unlock()
	if n > maxTokenCaches || n == 0 {
		t.Fatalf("%d token caches kept, bound %d", n, maxTokenCaches)
	}
}
