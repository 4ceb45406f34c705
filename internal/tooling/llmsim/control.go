package llmsim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Control drives a running simulator over HTTP through its /sim endpoints:
// fault rules and counters. Tests of the service use it to script the
// provider's behaviour, e.g. "the next request of sim-snapshot gets a 503".
type Control struct {
	// BaseURL is the simulator's root, without /v1, e.g.
	// "http://127.0.0.1:8090".
	BaseURL string
	// HTTPClient sends the requests; nil means http.DefaultClient.
	HTTPClient *http.Client
}

// SetFaults installs a runtime rule (POST /sim/faults), replacing the
// model's previous runtime rule, and returns the rules then in force.
func (c Control) SetFaults(ctx context.Context, rule FaultRule) (FaultState, error) {
	body, err := json.Marshal(rule)
	if err != nil {
		return FaultState{}, fmt.Errorf("llmsim: encode fault rule: %w", err)
	}
	var st FaultState
	err = c.do(ctx, http.MethodPost, "/sim/faults", body, &st)
	return st, err
}

// ClearFaults removes the runtime rules of the given models, or all of them
// (DELETE /sim/faults), and returns the rules then in force.
func (c Control) ClearFaults(ctx context.Context, models ...string) (FaultState, error) {
	path := "/sim/faults"
	if len(models) > 0 {
		path += "?" + url.Values{"model": models}.Encode()
	}
	var st FaultState
	err := c.do(ctx, http.MethodDelete, path, nil, &st)
	return st, err
}

// Faults returns the rules in force (GET /sim/faults).
func (c Control) Faults(ctx context.Context) (FaultState, error) {
	var st FaultState
	err := c.do(ctx, http.MethodGet, "/sim/faults", nil, &st)
	return st, err
}

// Stats returns the counters (GET /sim/stats).
func (c Control) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	err := c.do(ctx, http.MethodGet, "/sim/stats", nil, &st)
	return st, err
}

// ResetStats resets the counters and the request numbering of fault
// decisions (POST /sim/stats/reset).
func (c Control) ResetStats(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/sim/stats/reset", nil, nil)
}

// do sends one request and decodes a 200 answer into out (unless nil); other
// statuses become an error with the simulator's message.
func (c Control) do(ctx context.Context, method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.BaseURL, "/")+path, rd)
	if err != nil {
		return fmt.Errorf("llmsim: %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("llmsim: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes))
	if err != nil {
		return fmt.Errorf("llmsim: %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error *apiError `json:"error"`
		}
		if json.Unmarshal(raw, &e) == nil && e.Error != nil {
			return fmt.Errorf("llmsim: %s %s: %s: %s", method, path, resp.Status, e.Error.Message)
		}
		return fmt.Errorf("llmsim: %s %s: %s", method, path, resp.Status)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("llmsim: %s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}
