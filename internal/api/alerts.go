package api

import (
	"context"
	"fmt"

	"github.com/timetravel-ai/timetravel/internal/alertnotify"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/monitoring"
	"github.com/timetravel-ai/timetravel/internal/webhook"
)

// thresholds are the alerts' thresholds of the configuration.
func (s *Server) thresholds() monitoring.Thresholds {
	return monitoring.Thresholds{
		TotalP95Warning:    s.cfg.Alerts.TotalP95Warning,
		TotalP95Critical:   s.cfg.Alerts.TotalP95Critical,
		SnapshotP95Warning: s.cfg.Alerts.SnapshotP95Warning,
	}
}

// activeAlerts returns the alerts active now over ALERT_WINDOW: those of
// GET /api/monitoring/alerts without a window of the caller's.
func (s *Server) activeAlerts(ctx context.Context) ([]monitoring.Alert, error) {
	w := s.cfg.Alerts.Window
	samples, err := monitoring.New(s.rdb).Recent(ctx, s.now(), w)
	if err != nil {
		return nil, fmt.Errorf("read the job timings: %w", err)
	}
	return monitoring.Alerts(monitoring.Stats(samples), s.thresholds(), w), nil
}

// newNotifier returns the alert notifier of ALERT_NOTIFY_URL and its
// client, or nils when it is unset or cannot work (logged: the api serves
// without notifications rather than not at all). The URL passes the
// webhooks' address rules here, and each connection again when it is
// dialled.
func newNotifier(cfg config.Config, s *Server) (*alertnotify.Notifier, *webhook.Sender) {
	a := cfg.Alerts
	if a.NotifyURL == "" {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Webhook.AttemptTimeout)
	defer cancel()
	if err := s.callbacks.ValidateURL(ctx, a.NotifyURL); err != nil {
		s.log.Error("alert notifications off: ALERT_NOTIFY_URL is not allowed", "err", err)
		return nil, nil
	}
	signer, err := webhook.SignerOf(cfg.Webhook)
	if err != nil {
		s.log.Error("alert notifications off: no webhook signer", "err", err)
		return nil, nil
	}
	sender := webhook.NewSender(s.callbacks, signer, cfg.Webhook.AttemptTimeout)
	n := alertnotify.New(alertnotify.Options{
		Redis: s.rdb, Alerts: s.activeAlerts, URL: a.NotifyURL, Format: alertnotify.Format(a.NotifyFormat),
		Poster: sender, Interval: a.NotifyInterval, Log: s.log.With("component", "alertnotify"),
	})
	return n, sender
}
