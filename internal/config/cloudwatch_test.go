package config

import (
	"strings"
	"testing"
	"time"
)

func TestCloudWatch(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    CloudWatch
		wantErr string
	}{
		{name: "off by default", env: map[string]string{}, want: CloudWatch{Interval: time.Minute}},
		{name: "off ignores a bad interval", env: map[string]string{"CLOUDWATCH_INTERVAL": "1ms"}, want: CloudWatch{Interval: time.Millisecond}},
		{name: "on", env: map[string]string{"CLOUDWATCH_NAMESPACE": "TimeTravel/prod", "CLOUDWATCH_INTERVAL": "30s", "CLOUDWATCH_EMF": "true"},
			want: CloudWatch{Namespace: "TimeTravel/prod", Interval: 30 * time.Second, EMF: true}},
		{name: "reserved namespace", env: map[string]string{"CLOUDWATCH_NAMESPACE": "AWS/EC2"}, wantErr: "CLOUDWATCH_NAMESPACE"},
		{name: "bad character", env: map[string]string{"CLOUDWATCH_NAMESPACE": "time*travel"}, wantErr: "CLOUDWATCH_NAMESPACE"},
		{name: "surrounding space", env: map[string]string{"CLOUDWATCH_NAMESPACE": "TimeTravel "}, wantErr: "CLOUDWATCH_NAMESPACE"},
		{name: "too long", env: map[string]string{"CLOUDWATCH_NAMESPACE": strings.Repeat("n", 256)}, wantErr: "CLOUDWATCH_NAMESPACE"},
		{name: "interval too short", env: map[string]string{"CLOUDWATCH_NAMESPACE": "TT", "CLOUDWATCH_INTERVAL": "500ms"}, wantErr: "CLOUDWATCH_INTERVAL"},
		{name: "interval too long", env: map[string]string{"CLOUDWATCH_NAMESPACE": "TT", "CLOUDWATCH_INTERVAL": "2h"}, wantErr: "CLOUDWATCH_INTERVAL"},
		{name: "bad boolean", env: map[string]string{"CLOUDWATCH_EMF": "maybe"}, wantErr: "CLOUDWATCH_EMF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := LoadFrom(tt.env)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.CloudWatch != tt.want {
				t.Errorf("got %+v, want %+v", c.CloudWatch, tt.want)
			}
			if c.CloudWatch.Enabled() != (tt.want.Namespace != "") {
				t.Errorf("Enabled %v", c.CloudWatch.Enabled())
			}
			if err := c.CloudWatch.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}
