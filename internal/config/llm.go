package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// DefaultProvider is the name of the provider made from the OPENAI_*
// variables when LLM_PROVIDERS is empty.
const DefaultProvider = "default"

// maxInFlightLimit bounds any in-flight cap: a larger one is a typo.
const maxInFlightLimit = 100_000

var providerName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// resolve fills Providers and Fallbacks from the variables. getenv reads
// the API key variables the providers name.
func (l *LLM) resolve(getenv func(string) string) error {
	var errs []error
	if strings.TrimSpace(l.ProvidersJSON) == "" {
		l.Providers = []Provider{l.defaultProvider()}
	} else if ps, err := parseProviders(l.ProvidersJSON); err != nil {
		errs = append(errs, fmt.Errorf("config: LLM_PROVIDERS: %w", err))
	} else {
		for i := range ps {
			p := &ps[i]
			if p.APIType == "" {
				p.APIType = "openai"
			}
			if p.APIVersion == "" {
				p.APIVersion = l.APIVersion
			}
			if p.MaxInFlight == 0 {
				p.MaxInFlight = l.MaxInFlight
			}
			if p.APIKeyEnv != "" {
				p.APIKey = getenv(p.APIKeyEnv)
				if p.APIKey == "" {
					errs = append(errs, fmt.Errorf("config: LLM_PROVIDERS: provider %q: its api_key_env names a variable that is empty or not set", p.Name))
				}
			}
		}
		l.Providers = ps
	}
	fb, err := ParseFallbacks(l.FallbacksSpec)
	if err != nil {
		errs = append(errs, fmt.Errorf("config: LLM_FALLBACKS: %w", err))
	}
	l.Fallbacks = fb
	return errors.Join(errs...)
}

// defaultProvider is the provider the OPENAI_* variables describe.
func (l LLM) defaultProvider() Provider {
	return Provider{
		Name: DefaultProvider, BaseURL: l.BaseURL, APIKeyEnv: "OPENAI_API_KEY", APIKey: l.APIKey,
		APIType: l.APIType, APIVersion: l.APIVersion, MaxInFlight: l.MaxInFlight, RPM: l.RPM, TPM: l.TPM,
	}
}

// ProviderList is the providers the service calls, in order: Providers
// as LoadFrom resolved them (LLM_PROVIDERS, or else the provider of the
// OPENAI_* variables) or, in an LLM built by hand with none, the provider
// of its OPENAI_* fields.
func (l LLM) ProviderList() []Provider {
	if len(l.Providers) == 0 {
		return []Provider{l.defaultProvider()}
	}
	return l.Providers
}

func parseProviders(s string) ([]Provider, error) {
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.DisallowUnknownFields()
	var ps []Provider
	if err := dec.Decode(&ps); err != nil {
		return nil, fmt.Errorf("want a JSON array of providers: %w", err)
	}
	if dec.More() {
		return nil, errors.New("want a single JSON array of providers")
	}
	if len(ps) == 0 {
		return nil, errors.New("empty provider list")
	}
	return ps, nil
}

// ParseFallbacks parses "model=fallback|fallback,model=fallback" into a map
// from a model to its fallbacks in order. Spaces around names are ignored;
// an empty string gives no fallbacks. A model may appear once as a key, not
// among its own fallbacks, and not twice in one list.
func ParseFallbacks(spec string) (map[string][]string, error) {
	out := map[string][]string{}
	if strings.TrimSpace(spec) == "" {
		return out, nil
	}
	for item := range strings.SplitSeq(spec, ",") {
		model, list, ok := strings.Cut(item, "=")
		model = strings.TrimSpace(model)
		if !ok || model == "" || strings.TrimSpace(list) == "" {
			return nil, fmt.Errorf("item %q: want model=fallback[|fallback...]", strings.TrimSpace(item))
		}
		if _, dup := out[model]; dup {
			return nil, fmt.Errorf("model %q given twice", model)
		}
		var fbs []string
		for f := range strings.SplitSeq(list, "|") {
			f = strings.TrimSpace(f)
			switch {
			case f == "":
				return nil, fmt.Errorf("item %q: empty fallback name", strings.TrimSpace(item))
			case f == model:
				return nil, fmt.Errorf("model %q falls back to itself", model)
			case slices.Contains(fbs, f):
				return nil, fmt.Errorf("model %q lists fallback %q twice", model, f)
			}
			fbs = append(fbs, f)
		}
		out[model] = fbs
	}
	return out, nil
}

// validate checks the LLM settings that LoadFrom resolved and the limits.
func (l LLM) validate() []error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %s", name, fmt.Sprintf(format, args...)))
	}
	if l.FirstTokenTimeout < 0 {
		bad("LLM_FIRST_TOKEN_TIMEOUT", "must not be negative, got %s", l.FirstTokenTimeout)
	} else if l.FirstTokenTimeout > 0 && l.FirstTokenTimeout < 100*time.Millisecond {
		bad("LLM_FIRST_TOKEN_TIMEOUT", "must be 0 (none) or at least 100ms, got %s", l.FirstTokenTimeout)
	}
	if l.MaxInFlight < 1 || l.MaxInFlight > maxInFlightLimit {
		bad("LLM_MAX_IN_FLIGHT", "must be between 1 and %d, got %d", maxInFlightLimit, l.MaxInFlight)
	}
	if l.RPM < 0 {
		bad("LLM_RPM", "must not be negative (0 is unlimited), got %d", l.RPM)
	}
	if l.TPM < 0 {
		bad("LLM_TPM", "must not be negative (0 is unlimited), got %d", l.TPM)
	}
	if l.MaxAttempts < 1 || l.MaxAttempts > 10 {
		bad("LLM_MAX_ATTEMPTS", "must be between 1 and 10, got %d", l.MaxAttempts)
	}
	if l.RetryMaxWait < 0 || l.RetryMaxWait > time.Minute {
		bad("LLM_RETRY_MAX_WAIT", "must be between 0 and 1m, got %s", l.RetryMaxWait)
	}
	if l.CapacityWait < 0 || l.CapacityWait > 30*time.Second {
		bad("LLM_CAPACITY_WAIT", "must be between 0 and 30s, got %s", l.CapacityWait)
	}
	if !(l.AggregationReserve >= 0 && l.AggregationReserve <= 0.5) { // NaN too
		bad("LLM_AGGREGATION_RESERVE", "must be between 0 and 0.5, got %g", l.AggregationReserve)
	}
	if l.BreakerFailures < 1 || l.BreakerFailures > 1000 {
		bad("LLM_BREAKER_FAILURES", "must be between 1 and 1000, got %d", l.BreakerFailures)
	}
	if l.BreakerFailureRatio <= 0 || l.BreakerFailureRatio > 1 {
		bad("LLM_BREAKER_FAILURE_RATIO", "must be above 0 and at most 1, got %g", l.BreakerFailureRatio)
	}
	if l.BreakerWindow < time.Second {
		bad("LLM_BREAKER_WINDOW", "must be at least 1s, got %s", l.BreakerWindow)
	}
	if l.BreakerOpenFor < 100*time.Millisecond {
		bad("LLM_BREAKER_OPEN_FOR", "must be at least 100ms, got %s", l.BreakerOpenFor)
	}
	if l.BreakerMinRequests < 0 || l.BreakerMinRequests > 100000 {
		bad("LLM_BREAKER_MIN_REQUESTS", "must be between 0 and 100000, got %d", l.BreakerMinRequests)
	}
	if l.BreakerTrials < 1 || l.BreakerTrials > 100 {
		bad("LLM_BREAKER_TRIALS", "must be between 1 and 100, got %d", l.BreakerTrials)
	}
	if l.BreakerRamp < 0 {
		bad("LLM_BREAKER_RAMP", "must not be negative, got %s", l.BreakerRamp)
	}
	if strings.TrimSpace(l.ProvidersJSON) != "" {
		errs = append(errs, validateProviders(l.Providers)...)
	}
	return errs
}

func validateProviders(ps []Provider) []error {
	var errs []error
	bad := func(p Provider, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: LLM_PROVIDERS: provider %q: %s", p.Name, fmt.Sprintf(format, args...)))
	}
	names := map[string]bool{}
	servedBy := map[string]string{}
	for _, p := range ps {
		if !providerName.MatchString(p.Name) {
			errs = append(errs, fmt.Errorf("config: LLM_PROVIDERS: provider name %q: want 1-64 letters, digits, '.', '_' or '-'", p.Name))
			continue
		}
		if names[p.Name] {
			bad(p, "name given twice")
		}
		names[p.Name] = true
		if u, err := url.Parse(p.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(p, "base_url must be an http(s) URL, got %q", p.BaseURL)
		}
		if p.APIType != "openai" && p.APIType != "azure" {
			bad(p, "api_type must be openai or azure, got %q", p.APIType)
		}
		if p.MaxInFlight < 1 || p.MaxInFlight > maxInFlightLimit {
			bad(p, "max_in_flight must be between 1 and %d, got %d", maxInFlightLimit, p.MaxInFlight)
		}
		if p.RPM < 0 || p.TPM < 0 {
			bad(p, "rpm and tpm must not be negative (0 is unlimited)")
		}
		for _, m := range p.Models {
			if strings.TrimSpace(m) == "" {
				bad(p, "empty model name")
				continue
			}
			if other, ok := servedBy[m]; ok {
				bad(p, "model %q is also served by provider %q", m, other)
				continue
			}
			servedBy[m] = p.Name
		}
	}
	return errs
}
