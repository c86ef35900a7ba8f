package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// Client speaks to a running daemon's API. The zero HTTP client gets a 5 s
// timeout.
type Client struct {
	Base  string // e.g. http://127.0.0.1:9091
	Token string
	HTTP  *http.Client
}

// ErrNotRunning: nothing listens at the client's base URL.
var ErrNotRunning = errors.New("sipwarden is not running")

// ErrRefused is returned when the daemon refuses a change (409: whitelisted
// or never-ban; 404 on delete: not banned).
var ErrRefused = errors.New("refused")

// StatusError is a non-success answer from the daemon.
type StatusError struct {
	Status int
	Msg    string
}

func (e *StatusError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Status, e.Msg) }

// Unwrap makes errors.Is(err, ErrRefused) true for refusals.
func (e *StatusError) Unwrap() error {
	if e.Status == http.StatusConflict || e.Status == http.StatusNotFound {
		return ErrRefused
	}
	return nil
}

func (c *Client) do(ctx context.Context, method, path string, body any, out any) (int, error) {
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Second}
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.Base, "/")+path, rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := hc.Do(req)
	if errors.Is(err, syscall.ECONNREFUSED) {
		return 0, fmt.Errorf("%w at %s: start it or pass -api", ErrNotRunning, c.Base)
	}
	var nerr net.Error
	if errors.As(err, &nerr) && nerr.Timeout() {
		return 0, fmt.Errorf("no answer from sipwarden at %s in time: is it the right address (-api)?", c.Base)
	}
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("HTTP %d: undecodable answer: %w", resp.StatusCode, err)
		}
	}
	return resp.StatusCode, nil
}

func statusErr(status int, out map[string]any) error {
	msg, _ := out["error"].(string)
	if msg == "" {
		msg = http.StatusText(status)
	}
	return &StatusError{Status: status, Msg: msg}
}

// Check asks whether ip is whitelisted; entry is the daemon's answer.
func (c *Client) Check(ctx context.Context, ip string) (whitelisted bool, entry map[string]any, err error) {
	if _, err := ParseIP(ip); err != nil {
		return false, nil, err
	}
	var out map[string]any
	status, err := c.do(ctx, http.MethodGet, "/v1/whitelist/"+url.PathEscape(ip), nil, &out)
	switch {
	case err != nil:
		return false, nil, err
	case status == http.StatusOK:
		return true, out, nil
	case status == http.StatusNotFound:
		return false, out, nil
	default:
		return false, out, statusErr(status, out)
	}
}

// CheckIP asks whether ip may be banned at all (GET /v1/check/{ip}).
func (c *Client) CheckIP(ctx context.Context, ip string) (CheckAnswer, error) {
	var a CheckAnswer
	if _, err := ParseIP(ip); err != nil {
		return a, err
	}
	var raw json.RawMessage
	status, err := c.do(ctx, http.MethodGet, "/v1/check/"+url.PathEscape(ip), nil, &raw)
	if err != nil {
		return a, err
	}
	if status != http.StatusOK {
		var out map[string]any
		_ = json.Unmarshal(raw, &out)
		return a, statusErr(status, out)
	}
	if err := json.Unmarshal(raw, &a); err != nil {
		return a, fmt.Errorf("undecodable answer: %w", err)
	}
	return a, nil
}

// Get fetches path and decodes its JSON answer into out (the listings).
func (c *Client) Get(ctx context.Context, path string, out any) error {
	var raw json.RawMessage
	status, err := c.do(ctx, http.MethodGet, path, nil, &raw)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		var m map[string]any
		_ = json.Unmarshal(raw, &m)
		return statusErr(status, m)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("undecodable answer: %w", err)
	}
	return nil
}

// Bans lists the active bans.
func (c *Client) Bans(ctx context.Context) ([]map[string]any, error) {
	var out struct {
		Bans  []map[string]any `json:"bans"`
		Error string           `json:"error"`
	}
	status, err := c.do(ctx, http.MethodGet, "/v1/bans", nil, &out)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, &StatusError{Status: status, Msg: out.Error}
	}
	return out.Bans, nil
}

// AddBan bans ip for d (0: the daemon's bantime).
func (c *Client) AddBan(ctx context.Context, ip string, d time.Duration, reason string) (map[string]any, error) {
	body := map[string]any{"ip": ip, "reason": reason}
	if d > 0 {
		body["duration"] = d.String()
	}
	var out map[string]any
	status, err := c.do(ctx, http.MethodPost, "/v1/bans", body, &out)
	if err != nil {
		return nil, err
	}
	if status != http.StatusCreated {
		return out, statusErr(status, out)
	}
	return out, nil
}

// DelBan lifts the ban on ip.
func (c *Client) DelBan(ctx context.Context, ip string) error {
	var out map[string]any
	status, err := c.do(ctx, http.MethodDelete, "/v1/bans/"+url.PathEscape(ip), nil, &out)
	if err != nil {
		return err
	}
	if status != http.StatusNoContent {
		return statusErr(status, out)
	}
	return nil
}
