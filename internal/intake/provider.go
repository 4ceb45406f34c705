package intake

// ProviderOf names the provider that serves a model, as cache keys and
// fingerprints name it (config.LLM.ProviderIdentity). The api and the
// workers must be configured with the same providers, or they name
// different keys for one answer.
type ProviderOf func(model string) string

// Of is the identity of the provider that serves model; "" when p is nil
// (one provider, never named).
func (p ProviderOf) Of(model string) string {
	if p == nil {
		return ""
	}
	return p(model)
}
