package webhook_test

import (
	"fmt"
	"net/http"
	"time"

	"github.com/erpflow/erpflow/actions/webhook"
)

// A Go receiver checks a delivery with Verify, using the exact bytes it
// received and the secrets the rule uses (both during a rotation).
func ExampleVerify() {
	secrets := []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
	body := []byte(`{"salesOrderID":"AB194631","status":"RELEASED"}`)
	ts := time.Unix(1726098072, 0)

	sig, _ := webhook.Sign(secrets, "dlv_01", ts, body) // what erpflow sends
	h := http.Header{}
	h.Set("webhook-id", "dlv_01")
	h.Set("webhook-timestamp", "1726098072")
	h.Set("webhook-signature", sig)

	now := func() time.Time { return ts.Add(time.Minute) }
	fmt.Println(webhook.Verify(secrets, h, body, webhook.VerifyOptions{Now: now}))
	fmt.Println(webhook.Verify(secrets, h, []byte(`{}`), webhook.VerifyOptions{Now: now}))
	// Output:
	// <nil>
	// no matching webhook signature
}

func ExampleSign() {
	sig, err := webhook.Sign([]string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, "msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	fmt.Println(sig, err)
	// Output: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= <nil>
}
