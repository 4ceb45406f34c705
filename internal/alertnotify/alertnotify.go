// Package alertnotify tells a person when a monitoring alert starts or
// clears: every api replica looks at the alerts (monitoring.Alerts) every
// interval, and the one that first sees a change claims it on Redis, so
// that each start ("firing") and each end ("resolved") of an alert is
// posted once across the cluster. The post goes to one configured URL, in
// a Slack-compatible or an Alertmanager-compatible body, signed like the
// job webhooks (Standard Webhooks headers) and sent through the webhooks'
// SSRF-safe client (webhook.Sender), with the webhooks' retry schedule.
//
// A replica that dies while it retries a post loses that post: the claim
// is taken before the delivery, so that two replicas never both post. The
// next change of the alert is posted as usual.
package alertnotify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/monitoring"
	"github.com/timetravel-ai/timetravel/internal/pause"
	"github.com/timetravel-ai/timetravel/internal/webhook"
)

// Key is the Redis hash of the alerts notified as firing, by name.
const Key = "tt:alerts:notified"

// Format is the shape of the posted body.
type Format string

// Formats.
const (
	// Slack is a Slack incoming webhook's body: {"text": ...}, which
	// Mattermost, Rocket.Chat and Teams' Slack-compatible hooks take too.
	Slack Format = "slack"
	// Alertmanager is Prometheus Alertmanager's webhook body (version 4),
	// one alert per post.
	Alertmanager Format = "alertmanager"
)

// Status of a transition.
const (
	Firing   = "firing"
	Resolved = "resolved"
)

// Poster makes one attempt to post a signed body (a *webhook.Sender).
type Poster interface {
	Send(ctx context.Context, target, id string, body []byte) webhook.Result
}

// Options configure a Notifier.
type Options struct {
	Redis redis.UniversalClient
	// Alerts returns the alerts active now.
	Alerts func(ctx context.Context) ([]monitoring.Alert, error)
	// URL receives the posts, through Poster (already checked against the
	// webhook policy: see webhook.Policy.ValidateURL).
	URL    string
	Format Format
	Poster Poster
	// Interval between two looks at the alerts (default 15 s).
	Interval time.Duration
	// Attempts bounds the attempts of one post (default 5), spaced by
	// webhook.RetryDelay.
	Attempts int
	// Source names the service in the posts (default "timetravel").
	Source string
	Log    *slog.Logger
	// Now is the clock (default time.Now); sleep waits between attempts
	// (default: a timer honouring ctx).
	Now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
}

// Notifier posts the alerts' transitions. Run it in every api replica.
type Notifier struct{ o Options }

// New returns a Notifier. It panics without Redis, Alerts, URL or Poster,
// a wiring mistake.
func New(o Options) *Notifier {
	if o.Redis == nil || o.Alerts == nil || o.URL == "" || o.Poster == nil {
		panic("alertnotify.New: Redis, Alerts, URL and Poster are required")
	}
	if o.Format == "" {
		o.Format = Slack
	}
	if o.Interval <= 0 {
		o.Interval = 15 * time.Second
	}
	if o.Attempts <= 0 {
		o.Attempts = 5
	}
	if o.Source == "" {
		o.Source = "timetravel"
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.sleep == nil {
		o.sleep = pause.For
	}
	return &Notifier{o: o}
}

// Run looks at the alerts every interval until ctx ends; it returns nil
// then. Errors of one look are logged, and the next look tries again.
func (n *Notifier) Run(ctx context.Context) error {
	t := time.NewTicker(n.o.Interval)
	defer t.Stop()
	for {
		if err := n.Check(ctx); err != nil && ctx.Err() == nil {
			n.o.Log.Warn("alert notifications: look at the alerts", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// claimScript: KEYS[1] the notified hash; ARGV[1] the alert's name,
// ARGV[2] "firing" (with ARGV[3] the alert's JSON) or "resolved". Records
// the transition unless it is recorded already; returns 1 to the caller
// that recorded it (the one to post it), 0 to the others, and for
// "resolved" the alert as it fired.
var claimScript = redis.NewScript(`
local was = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == 'firing' then
  if was then return {0} end
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return {1}
end
if not was then return {0} end
redis.call('HDEL', KEYS[1], ARGV[1])
return {1, was}
`)

// record is an alert as it fired: Key's value.
type record struct {
	Alert monitoring.Alert `json:"alert"`
	Since time.Time        `json:"since"`
}

// Check compares the alerts active now with those notified as firing and
// posts each start and end that this replica claims first. It returns the
// error of reading the alerts or Redis; failed posts are logged.
func (n *Notifier) Check(ctx context.Context) error {
	active, err := n.o.Alerts(ctx)
	if err != nil {
		return fmt.Errorf("read the alerts: %w", err)
	}
	notified, err := n.o.Redis.HKeys(ctx, Key).Result()
	if err != nil {
		return fmt.Errorf("read the notified alerts: %w", err)
	}
	now := n.o.Now()
	firing := map[string]bool{}
	for _, name := range notified {
		firing[name] = true
	}
	on := map[string]bool{}
	for _, a := range active {
		on[a.Name] = true
		if firing[a.Name] {
			// Posted already: no claim to make (a round trip per alert
			// and look saved while it stays on).
			continue
		}
		b, _ := json.Marshal(record{Alert: a, Since: now})
		won, _, err := n.claim(ctx, a.Name, Firing, string(b))
		if err != nil {
			return err
		}
		if won {
			n.post(ctx, Firing, a, now, time.Time{})
		}
	}
	sort.Strings(notified)
	for _, name := range notified {
		if on[name] {
			continue
		}
		won, was, err := n.claim(ctx, name, Resolved, "")
		if err != nil {
			return err
		}
		if won {
			var r record
			if err := json.Unmarshal([]byte(was), &r); err != nil {
				r = record{Alert: monitoring.Alert{Name: name}}
			}
			n.post(ctx, Resolved, r.Alert, r.Since, now)
		}
	}
	return nil
}

func (n *Notifier) claim(ctx context.Context, name, status, value string) (bool, string, error) {
	res, err := claimScript.Run(ctx, n.o.Redis, []string{Key}, name, status, value).Slice()
	if err != nil {
		return false, "", fmt.Errorf("claim the %s notice of alert %s: %w", status, name, err)
	}
	won := len(res) > 0 && res[0] == int64(1)
	was := ""
	if len(res) > 1 {
		was, _ = res[1].(string)
	}
	return won, was, nil
}

// post delivers one transition, with retries; it logs the outcome.
func (n *Notifier) post(ctx context.Context, status string, a monitoring.Alert, since, ended time.Time) {
	body, err := Body(n.o.Format, n.o.Source, status, a, since, ended)
	if err != nil {
		n.o.Log.Error("alert notifications: encode", "alert", a.Name, "err", err)
		return
	}
	// The id is the transition's, the same for every attempt of it, so
	// that a receiver deduplicates retries (Standard Webhooks' webhook-id).
	sum := sha256.Sum256([]byte(a.Name + "\x00" + status + "\x00" + since.UTC().Format(time.RFC3339Nano)))
	id := "alert_" + hex.EncodeToString(sum[:12])
	log := n.o.Log.With("alert", a.Name, "status", status, "webhook_id", id)
	for attempt := 1; ; attempt++ {
		r := n.o.Poster.Send(ctx, n.o.URL, id, body)
		if r.Delivered {
			log.Info("alert notification delivered", "attempts", attempt, "status_code", r.StatusCode)
			return
		}
		if !r.Retry || attempt >= n.o.Attempts {
			log.Warn("alert notification failed", "attempts", attempt, "status_code", r.StatusCode, "err", r.Err)
			return
		}
		if err := n.o.sleep(ctx, webhook.RetryDelay(attempt, r.RetryAfter)); err != nil {
			log.Warn("alert notification abandoned", "attempts", attempt, "err", err)
			return
		}
	}
}

// Body returns the body of one transition in format f: status is Firing
// or Resolved, since when the alert started, ended when it cleared (zero
// while firing).
func Body(f Format, source, status string, a monitoring.Alert, since, ended time.Time) ([]byte, error) {
	switch f {
	case Slack:
		return json.Marshal(map[string]string{"text": slackText(source, status, a)})
	case Alertmanager:
		return json.Marshal(alertmanagerBody(source, status, a, since, ended))
	}
	return nil, fmt.Errorf("alert notification format %q: want %q or %q", f, Slack, Alertmanager)
}

func slackText(source, status string, a monitoring.Alert) string {
	if status == Resolved {
		return fmt.Sprintf("[RESOLVED] %s: %s (%s) is back under its threshold", source, a.Name, a.Severity)
	}
	return fmt.Sprintf("[FIRING] %s: %s (%s): %s", source, a.Name, a.Severity, a.Message)
}

// amAlert and amBody are Alertmanager's webhook payload (version 4).
type amAlert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

type amBody struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   int               `json:"truncatedAlerts"`
	Status            string            `json:"status"`
	Receiver          string            `json:"receiver"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []amAlert         `json:"alerts"`
}

func alertmanagerBody(source, status string, a monitoring.Alert, since, ended time.Time) amBody {
	labels := map[string]string{"alertname": a.Name, "severity": a.Severity, "service": source}
	if a.Stage != "" {
		labels["stage"] = a.Stage
	}
	ann := map[string]string{"summary": a.Message}
	if a.ThresholdMS > 0 {
		ann["value_ms"] = fmt.Sprintf("%.0f", a.ValueMS)
		ann["threshold_ms"] = fmt.Sprintf("%.0f", a.ThresholdMS)
	}
	sum := sha256.Sum256([]byte(source + "\x00" + a.Name))
	return amBody{
		Version: "4", GroupKey: "{}:{alertname=\"" + a.Name + "\"}", Status: status, Receiver: source,
		GroupLabels: map[string]string{"alertname": a.Name}, CommonLabels: labels, CommonAnnotations: ann,
		Alerts: []amAlert{{
			Status: status, Labels: labels, Annotations: ann, StartsAt: since.UTC(), EndsAt: ended.UTC(),
			Fingerprint: hex.EncodeToString(sum[:8]),
		}},
	}
}
