// Package cache holds what lets the service answer a question it has seen
// without asking a model again: the question normalisation every key is
// built on, the snapshot cache (one answer as of one date), the result
// cache (key changes and narrative, by the snapshots they were made from),
// and the in-flight registry that makes identical requests share one job.
// Everything lives in Redis and is shared by every process.
package cache

import (
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// NormalizeQuestion folds the differences between two spellings of one
// question that cannot change its meaning: Unicode compatibility forms
// (NFKC: full-width letters, ligatures, non-breaking spaces), letter case,
// runs of white space, and the punctuation a question may end with
// ("?", "!", ".", "…"). It keeps everything else (inner punctuation, digits,
// symbols, word order), so that questions that mean different things never
// share a key: "C++ or C#?" and "C or C?" stay apart, as do "3.5" and "35".
// The result is idempotent: NormalizeQuestion(NormalizeQuestion(q)) equals
// NormalizeQuestion(q).
func NormalizeQuestion(q string) string {
	q = norm.NFKC.String(q)
	q = strings.ToLower(q)
	q = strings.Join(strings.FieldsFunc(q, unicode.IsSpace), " ")
	q = strings.TrimRightFunc(q, func(r rune) bool {
		return unicode.IsSpace(r) || r == '?' || r == '!' || r == '.' || r == '…' || r == '？' || r == '！' || r == '。'
	})
	// Lower-casing and trimming can expose new compatibility forms (rare,
	// but the result must be a fixed point).
	if n := norm.NFKC.String(q); n != q {
		return NormalizeQuestion(n)
	}
	return q
}
