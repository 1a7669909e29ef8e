package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// pythonWithGRPC returns a Python that can run the Python example plugin
// ($ERPFLOW_PYTHON, /usr/bin/python3, python3 on PATH), or skips.
func pythonWithGRPC(t *testing.T) string {
	t.Helper()
	for _, py := range []string{os.Getenv("ERPFLOW_PYTHON"), "/usr/bin/python3", "python3"} {
		if py != "" && exec.Command(py, "-c", "import grpc, google.protobuf, cryptography").Run() == nil {
			return py
		}
	}
	t.Skip("python3-grpcio missing: apt-get install python3-grpcio python3-protobuf python3-cryptography")
	return ""
}

// TestServePythonPlugin runs a rule of `type: ticket` through `erpflow
// serve` with the Python example plugin: the ticket API answers 503 once,
// then 201; the ticket arrives with the rendered title, the bearer token
// and the delivery id as Idempotency-Key; the delivery succeeds on its
// second attempt, with the token in neither its payload nor its attempts;
// the plugin process is gone after serve stops.
func TestServePythonPlugin(t *testing.T) {
	t.Parallel()
	py := pythonWithGRPC(t)
	erpflowBin(t)
	launcher, err := filepath.Abs("../../examples/plugins/python-ticket/erpflow-ticket")
	if err != nil {
		t.Fatal(err)
	}
	const token = "tkt-s3cret-4711"

	type ticket struct {
		auth, key string
		body      map[string]any
	}
	var mu sync.Mutex
	var got []ticket
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &body)
		mu.Lock()
		got = append(got, ticket{r.Header.Get("Authorization"), r.Header.Get("Idempotency-Key"), body})
		n := len(got)
		mu.Unlock()
		if n == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"id":"OPS-42"}`))
	}))
	defer api.Close()
	tickets := func() []ticket { mu.Lock(); defer mu.Unlock(); return append([]ticket(nil), got...) }

	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, "rules.yaml"), `rules:
  - name: order-ticket
    on: {entity: SalesOrder, event: status_changed}
    retry: {schedule: [1s]}
    actions:
      - type: ticket
        url: `+api.URL+`/issues
        allow_http: true
        project: OPS
        title: 'Order {entity_id} is {data.status}'
        body: 'Customer {data.customer}'
        token: ${TICKET_TOKEN}
`)
	writeTestFile(t, filepath.Join(dir, "erpflow.yaml"), "listen: 127.0.0.1:0\ndatabase: sqlite:./erpflow.db\nrules: [./rules.yaml]\nplugins:\n  - {name: ticket, path: "+strconvQuote(launcher)+"}\n")
	srv := start(t, dir, []string{"ERPFLOW_PYTHON=" + py, "TICKET_TOKEN=" + token}, "serve", "--config", "erpflow.yaml", "--log-format", "json")
	base := srv.waitOutput(t, `"addr":"(http://127\.0\.0\.1:\d+)"`)[1]
	pid, _ := strconv.Atoi(srv.waitOutput(t, `"msg":"plugin started".*"types":\["ticket"\].*"protocol":2.*"pid":(\d+)`)[1])

	res, err := http.Post(base+"/v1/events", "application/json", strings.NewReader(
		`{"id":"evt-1","entity":"SalesOrder","entity_id":"SO1000","event":"status_changed","data":{"status":"RELEASED","customer":"Bikes Inc"}}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	id := regexp.MustCompile(`dlv_\w+`).FindString(string(b))
	if res.StatusCode/100 != 2 || id == "" {
		t.Fatalf("POST /v1/events = %d %s", res.StatusCode, b)
	}

	var raw []byte
	var d struct {
		Delivery struct{ State string } `json:"delivery"`
		Attempts []struct {
			Outcome string
			Code    int
			Detail  map[string]any
		} `json:"attempts"`
	}
	pollUntil(t, "the delivery to succeed", func() bool {
		res, err := http.Get(base + "/v1/deliveries/" + id)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ = io.ReadAll(res.Body)
		res.Body.Close()
		_ = json.Unmarshal(raw, &d)
		return d.Delivery.State == "succeeded"
	})
	if len(d.Attempts) != 2 || d.Attempts[0].Outcome != "retryable" || d.Attempts[0].Code != 503 ||
		d.Attempts[1].Outcome != "succeeded" || d.Attempts[1].Code != 201 || d.Attempts[1].Detail["ticket_id"] != "OPS-42" {
		t.Fatalf("attempts: %s", raw)
	}
	if strings.Contains(string(raw), token) {
		t.Fatalf("the token is in the delivery's payload or attempts: %s", raw)
	}
	tk := tickets()
	if len(tk) != 2 {
		t.Fatalf("%d requests to the ticket API", len(tk))
	}
	for _, x := range tk {
		if x.auth != "Bearer "+token || x.key != id || x.body["title"] != "Order SO1000 is RELEASED" ||
			x.body["body"] != "Customer Bikes Inc" || x.body["project"] != "OPS" {
			t.Fatalf("ticket %+v (delivery %s)", x, id)
		}
	}

	srv.cmd.Process.Signal(syscall.SIGTERM)
	if code := srv.wait(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	pollUntil(t, "the plugin process to exit", func() bool { return processGone(pid) })
	out := srv.out.String()
	if strings.Contains(out, token) {
		t.Fatal("the token reached the log")
	}
	if strings.Contains(out, `"level":"WARN"`) || strings.Contains(out, `"level":"ERROR"`) {
		t.Fatalf("warnings or errors in the log:\n%s", out)
	}
}

// processGone: no process has pid, or only its zombie is left.
func processGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}
