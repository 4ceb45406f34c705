package webhook

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// Signer signs deliveries with the current secret and, during a rotation,
// the previous one too, so that receivers holding either secret verify them.
type Signer struct {
	keys []*standardwebhooks.Webhook
}

// NewSigner takes secrets in the "whsec_<base64>" form; previous may be
// empty. The error never contains a secret.
func NewSigner(current, previous string) (*Signer, error) {
	s := &Signer{}
	for i, secret := range []string{current, previous} {
		if secret == "" {
			if i == 0 {
				return nil, fmt.Errorf("webhook secret is empty")
			}
			continue
		}
		if !strings.HasPrefix(secret, "whsec_") {
			return nil, fmt.Errorf("webhook secret must have the form whsec_<base64>")
		}
		wh, err := standardwebhooks.NewWebhook(secret)
		if err != nil {
			return nil, fmt.Errorf("webhook secret is not valid base64 after whsec_")
		}
		s.keys = append(s.keys, wh)
	}
	return s, nil
}

// Headers returns the Standard Webhooks headers for one delivery attempt:
// webhook-id (the caller keeps it stable across retries), webhook-timestamp
// and webhook-signature with one "v1,<base64>" per secret.
func (s *Signer) Headers(id string, at time.Time, body []byte) (http.Header, error) {
	sigs := make([]string, 0, len(s.keys))
	for _, k := range s.keys {
		sig, err := k.Sign(id, at, body)
		if err != nil {
			return nil, fmt.Errorf("sign webhook: %w", err)
		}
		sigs = append(sigs, sig)
	}
	h := http.Header{}
	h.Set(standardwebhooks.HeaderWebhookID, id)
	h.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(at.Unix(), 10))
	h.Set(standardwebhooks.HeaderWebhookSignature, strings.Join(sigs, " "))
	return h, nil
}
