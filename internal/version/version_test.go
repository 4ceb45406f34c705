package version

import "testing"

func TestIsFlag(t *testing.T) {
	tests := []struct {
		arg  string
		want bool
	}{
		{"-version", true},
		{"--version", true},
		{"version", false},
		{"-v", false},
		{"---version", false},
		{"-version=true", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := IsFlag(tt.arg); got != tt.want {
			t.Errorf("IsFlag(%q) = %v, want %v", tt.arg, got, tt.want)
		}
	}
}
