package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// HTTPReports reads stored reports from fullcall's REST API
// (GET /api/v1/reports/{call_id}).
type HTTPReports struct {
	// BaseURL is fullcall's HTTP address, e.g. http://127.0.0.1:9092.
	BaseURL string
	APIKey  string
	Client  *http.Client
}

// Report implements ReportChecker.
func (h *HTTPReports) Report(ctx context.Context, callID string) (audioBytes, chunks uint64, incomplete bool, err error) {
	client := h.Client
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	u := strings.TrimRight(h.BaseURL, "/") + "/api/v1/reports/" + url.PathEscape(callID)
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		return 0, 0, false, err
	}
	req.Header.Set("Authorization", "Bearer "+h.APIKey)
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, false, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	var r map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, 0, false, fmt.Errorf("GET %s: %w", u, err)
	}
	inc, _ := r["incomplete"].(bool)
	return parseUint(r["audio_bytes"]), parseUint(r["chunks"]), inc, nil
}
