package cloudwatch

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	cw "github.com/aws/aws-sdk-go-v2/service/cloudwatch"

	"github.com/timetravel-ai/timetravel/internal/config"
)

// NewClient returns a CloudWatch client configured by the AWS SDK's
// default chain: the region from AWS_REGION (or AWS_DEFAULT_REGION, or the
// shared config), the credentials from the environment, the shared files,
// a web identity (IRSA on EKS) or the instance's role, and the endpoint
// from AWS_ENDPOINT_URL_CLOUDWATCH when set. Credentials are resolved when
// the first call is signed, never logged. closeIdle closes the client's
// idle connections (call it once the client is no longer used). optFns
// adjust the loading (tests).
func NewClient(ctx context.Context, optFns ...func(*awsconfig.LoadOptions) error) (client *cw.Client, closeIdle func(), err error) {
	cfg, err := awsconfig.LoadDefaultConfig(ctx, optFns...)
	if err != nil {
		return nil, nil, fmt.Errorf("cloudwatch: load the AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		return nil, nil, errors.New("cloudwatch: no AWS region: set AWS_REGION (CLOUDWATCH_NAMESPACE is set)")
	}
	closeIdle = func() {}
	// A transport of its own, as the chain configured it (AWS_CA_BUNDLE),
	// whose idle connections can be closed: nothing of the client
	// outlives the process's shutdown.
	if bc, ok := cfg.HTTPClient.(*awshttp.BuildableClient); ok {
		tr := bc.GetTransport()
		cfg.HTTPClient = &http.Client{
			Transport: tr,
			Timeout:   30 * time.Second,
			// As the SDK's own client: a redirect is an answer, not followed.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		closeIdle = tr.CloseIdleConnections
	}
	return cw.NewFromConfig(cfg), closeIdle, nil
}

// FromConfig returns the Publisher that c describes, o adding what the
// process provides (Gauges, Log): EMF lines on stdout with CLOUDWATCH_EMF,
// PutMetricData calls through NewClient otherwise. c must be enabled.
func FromConfig(ctx context.Context, c config.CloudWatch, o Options) (*Publisher, error) {
	if !c.Enabled() {
		return nil, errors.New("cloudwatch: CLOUDWATCH_NAMESPACE is not set")
	}
	o.Namespace = c.Namespace
	o.Interval = c.Interval
	if c.EMF {
		if o.EMF == nil {
			o.EMF = os.Stdout
		}
		return New(o)
	}
	client, closeIdle, err := NewClient(ctx)
	if err != nil {
		return nil, err
	}
	o.Client = client
	if prev := o.OnClose; prev != nil {
		o.OnClose = func() { prev(); closeIdle() }
	} else {
		o.OnClose = closeIdle
	}
	return New(o)
}
