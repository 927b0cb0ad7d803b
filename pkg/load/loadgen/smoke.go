package loadgen

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
)

// The smoke scenario's checks, named as k6/smoke.js names them.
const (
	checkReadyStatus = "readyz is 200"
	checkReadyBody   = "readyz says ready"
	checkReadyColor  = "readyz names its color"
	checkOpens       = "websocket opens"
)

// CheckNames lists the smoke scenario's checks, in the order they run.
func CheckNames() []string {
	return []string{checkReadyStatus, checkReadyBody, checkReadyColor, checkOpens}
}

// CheckResult counts the passes and failures of one check.
type CheckResult struct {
	Passes int64 `json:"passes"`
	Fails  int64 `json:"fails"`
}

type checkSet map[string]CheckResult

func (c checkSet) add(name string, passes, fails int64) {
	r := c[name]
	r.Passes += passes
	r.Fails += fails
	c[name] = r
}

func (c checkSet) pass(name string, ok bool) {
	if ok {
		c.add(name, 1, 0)
	} else {
		c.add(name, 0, 1)
	}
}

// checkReady asks every URL's /readyz whether it is ready and names its color.
func (r *runner) checkReady(ctx context.Context) checkSet {
	checks := checkSet{}
	client := &http.Client{Timeout: r.cfg.ConnectTimeout}
	defer client.CloseIdleConnections()
	for _, base := range r.cfg.URLs {
		u := httpURL(base, "/readyz")
		status, body, color := 0, "", ""
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err == nil {
			var resp *http.Response
			if resp, err = client.Do(req); err == nil {
				var b struct {
					Status string `json:"status"`
				}
				data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
				_ = resp.Body.Close()
				_ = json.Unmarshal(data, &b)
				status, body, color = resp.StatusCode, b.Status, resp.Header.Get("X-Roomcast-Color")
			}
		}
		if err != nil {
			r.warn("readyz", "url", u, "err", err)
		}
		checks.pass(checkReadyStatus, status == http.StatusOK)
		checks.pass(checkReadyBody, body == "ready")
		checks.pass(checkReadyColor, color != "")
	}
	return checks
}
