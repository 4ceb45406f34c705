// Package kinds is where the service's job kinds are registered: adding a
// kind is one package and one line here.
package kinds

import (
	"github.com/timetravel-ai/timetravel/internal/ensemble"
	"github.com/timetravel-ai/timetravel/internal/jobkind"
	"github.com/timetravel-ai/timetravel/internal/timetravel"
)

// Registry returns a registry of every kind the service serves. Each
// process builds it once, in its composition root.
func Registry() *jobkind.Registry {
	r := jobkind.NewRegistry()
	r.Add(timetravel.Kind{})
	r.Add(ensemble.Kind{})
	return r
}
