package webhook

import (
	"slices"
	"testing"

	"github.com/timetravel-ai/timetravel/internal/config"
)

// PolicyOf and SignerOf build what the configuration says: the policy with
// its allow-list and denied ports, a signer only with a secret.
func TestPolicyAndSignerOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		http    bool
		allow   []string
		denied  []uint16
		signing bool
	}{
		{"off", map[string]string{}, false, nil, []uint16{6379, 8080, 9090, 26379}, false},
		{"on", map[string]string{"WEBHOOK_SECRET": secretA, "WEBHOOK_SECRET_PREVIOUS": secretB, "WEBHOOK_ALLOW_HTTP": "1", "WEBHOOK_ALLOW_CIDRS": "127.0.0.1, 10.0.0.0/8:8443", "API_ADDR": ":18080"},
			true, []string{"127.0.0.1/32", "10.0.0.0/8:8443"}, []uint16{6379, 9090, 18080, 26379}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := config.LoadFrom(tt.env)
			if err != nil {
				t.Fatal(err)
			}
			p := PolicyOf(c.Webhook)
			var allow []string
			for _, e := range p.AllowEntries {
				allow = append(allow, e.String())
			}
			if p.AllowHTTP != tt.http || !slices.Equal(allow, tt.allow) || !slices.Equal(p.DeniedPorts, tt.denied) {
				t.Errorf("policy http %v, allow %v, denied %v; want %v, %v, %v", p.AllowHTTP, allow, p.DeniedPorts, tt.http, tt.allow, tt.denied)
			}
			s, err := SignerOf(c.Webhook)
			if err != nil || (s != nil) != tt.signing {
				t.Fatalf("signer %v, %v; want one: %v", s, err, tt.signing)
			}
			if s != nil && len(s.keys) != 2 {
				t.Errorf("signer has %d keys, want the current and the previous", len(s.keys))
			}
		})
	}
}
