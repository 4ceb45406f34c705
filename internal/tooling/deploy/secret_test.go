package deploy_test

import (
	"strings"
	"testing"
)

// secretEnv are the optional Secret keys each container takes, under the
// same names: webhooks are on wherever the Secret has WEBHOOK_SECRET (the
// api accepts callback URLs, the worker signs deliveries), and the api
// mounts the queue admin UI with whichever credentials the Secret has.
var secretEnv = map[string][]string{
	"api":    {"WEBHOOK_SECRET", "ADMIN_USER", "ADMIN_PASSWORD", "ADMIN_TOKEN"},
	"worker": {"WEBHOOK_SECRET"},
}

// TestSecretCarriesWebhookAndAdminCredentials checks, on every
// kustomization, that the api and the worker take the webhook secret and
// the admin credentials from the Secret, that the template's values turn
// webhooks on, and that in production the template's admin placeholders
// are refused by the api, so that they can never go live.
func TestSecretCarriesWebhookAndAdminCredentials(t *testing.T) {
	forEach(t, func(t *testing.T, m *manifest) {
		secret := secretData(t, m)
		for name, keys := range secretEnv {
			refs := map[string]string{}
			optional := map[string]bool{}
			for _, e := range container(t, deploymentWorkload(t, m, name), name).Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					ref := e.ValueFrom.SecretKeyRef
					refs[e.Name] = ref.Key
					optional[e.Name] = ref.Optional != nil && *ref.Optional
				}
			}
			for _, k := range keys {
				if refs[k] != k {
					t.Errorf("%s: env %s from Secret key %q, want %q", name, k, refs[k], k)
				}
				// A Secret made by hand without the key still starts the
				// pods: webhooks or the admin UI are then off.
				if !optional[k] {
					t.Errorf("%s: env %s is not optional: a Secret without it would keep the pods from starting", name, k)
				}
				if secret[k] == "" {
					t.Errorf("the Secret (template) has no %s", k)
				}
			}
		}

		cfg := loadConfig(t, m)
		if !cfg.Webhook.Enabled() {
			t.Error("webhooks are off with the Secret's WEBHOOK_SECRET")
		}
		if !cfg.Production() {
			return
		}
		err := cfg.ValidateAPI()
		if err == nil {
			t.Fatal("the api would start in production with the template's admin placeholders")
		}
		for _, k := range []string{"ADMIN_PASSWORD", "ADMIN_TOKEN"} {
			if !strings.Contains(err.Error(), k) {
				t.Errorf("the api does not refuse the template's %s in production: %v", k, err)
			}
		}
	})
}
