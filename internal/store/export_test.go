package store

import (
	"context"
	"time"

	"github.com/timetravel-ai/timetravel/internal/job"
)

// CreateFullCopy stores j as Create did before jobs served from the caches
// were stored by reference: in full, whatever the job.
func CreateFullCopy(ctx context.Context, s *Store, j *job.Job) (string, error) {
	return s.create(ctx, j, false)
}

// SetNow makes s read the time from now.
func SetNow(s *Store, now func() time.Time) { s.now = now }
