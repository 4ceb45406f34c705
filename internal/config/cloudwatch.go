package config

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// CloudWatch configures the push of the worker's metrics to Amazon
// CloudWatch (package cloudwatch). It is off unless Namespace is set. The
// region and the credentials come from the AWS SDK's default chain (the
// AWS_REGION, AWS_* variables, the shared files, IRSA's web identity on
// EKS); the endpoint may be overridden with AWS_ENDPOINT_URL_CLOUDWATCH
// (a local stack), which the SDK reads itself.
type CloudWatch struct {
	// Namespace names the CloudWatch namespace of every metric, e.g.
	// TimeTravel; empty turns the push off.
	Namespace string `env:"CLOUDWATCH_NAMESPACE"`
	// Interval is how often the observations gathered in memory are sent
	// (one batch of PutMetricData calls, or of EMF lines).
	Interval time.Duration `env:"CLOUDWATCH_INTERVAL" envDefault:"60s"`
	// EMF writes the metrics as Embedded Metric Format lines on stdout,
	// for the log agent to turn into metrics, instead of calling
	// PutMetricData (no cloudwatch:PutMetricData permission needed).
	EMF bool `env:"CLOUDWATCH_EMF" envDefault:"false"`
}

// Enabled reports whether metrics are pushed to CloudWatch.
func (c CloudWatch) Enabled() bool { return c.Namespace != "" }

// Validate reports the CloudWatch settings that cannot work, naming their
// variables; nothing when the push is off.
func (c CloudWatch) Validate() error { return errors.Join(c.validate()...) }

func (c CloudWatch) validate() []error {
	if !c.Enabled() {
		return nil
	}
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %s", name, fmt.Sprintf(format, args...)))
	}
	ns := c.Namespace
	switch {
	case len(ns) > 255:
		bad("CLOUDWATCH_NAMESPACE", "must be at most 255 characters, got %d", len(ns))
	case strings.HasPrefix(ns, "AWS/"):
		// Reserved for AWS's own services: PutMetricData refuses it.
		bad("CLOUDWATCH_NAMESPACE", "must not begin with AWS/, got %q", ns)
	case strings.TrimSpace(ns) != ns:
		bad("CLOUDWATCH_NAMESPACE", "must not begin or end with white space")
	case strings.IndexFunc(ns, func(r rune) bool { return !namespaceRune(r) }) >= 0:
		bad("CLOUDWATCH_NAMESPACE", "may hold only letters, digits, spaces and . - _ / # :, got %q", ns)
	}
	// Below a second the pushes would cost more than they tell; CloudWatch
	// keeps standard metrics per minute anyway.
	if c.Interval < time.Second || c.Interval > time.Hour {
		bad("CLOUDWATCH_INTERVAL", "must be between 1s and 1h, got %s", c.Interval)
	}
	return errs
}

// namespaceRune reports whether r may appear in a CloudWatch namespace.
func namespaceRune(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	}
	return strings.ContainsRune(" ._-/#:", r)
}
