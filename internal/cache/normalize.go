// Package cache holds what lets the service answer a question it has seen
// without asking a model again, for jobs of every kind: the question
// normalisation keys are built on, the member cache (one member's answer,
// by the key its kind gives it), the result cache (the parts of an
// aggregation, by the key its kind gives it from the answers it was made
// from), and the in-flight registry that makes identical requests share
// one job. Everything lives in Redis and is shared by every process. The
// package knows no kind: kinds build their keys with Identity.
//
// Two requests share a cache entry only when they mean the same thing to a
// model: the normalisation folds nothing but invisible differences (white
// space around the question and between words, line endings, Unicode
// canonical equivalence), never case, punctuation, compatibility forms or
// indentation; and every kind's key names the provider that serves the
// model, so that an answer from one provider is never served as
// another's.
package cache

import (
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// fence opens and closes a fenced code block (Markdown's ``` fence).
const fence = "```"

// NormalizeQuestion folds the differences between two spellings of one
// question that cannot change what it asks, and nothing else:
//
//   - Unicode canonical equivalence (NFC): "Zu\u0308rich" and "Zürich" are
//     one spelling. Compatibility forms (NFKC) are not folded: "2⁵" is not
//     "25", "ＡＩ" stays full-width.
//   - Line endings: CRLF and CR become LF. Line breaks themselves stay.
//   - White space around the question (unicode.IsSpace) is trimmed.
//   - In prose, a run of horizontal white space inside a line (spaces,
//     tabs, vertical tab, form feed and every Unicode space separator,
//     Zs: no-break space, ideographic space, ...) becomes one ASCII space,
//     and white space at the end of a line goes. A line's leading
//     indentation stays as it is (after the question's own leading white
//     space is trimmed), because indentation can be code.
//   - Inside a fenced code block, every line stays byte for byte (after
//     NFC and line endings). A line whose text, after its indentation,
//     begins with ``` opens a block, and the next such line closes it; the
//     fence lines themselves are prose. An unclosed block runs to the end.
//
// Letter case ("IT" is not "it"), punctuation ("Pluto is a planet." is not
// "Pluto is a planet?"), digits, symbols and word order are kept. Invalid
// UTF-8, which a JSON request cannot carry, becomes U+FFFD.
//
// The result is a fixed point: NormalizeQuestion(NormalizeQuestion(q))
// equals NormalizeQuestion(q).
func NormalizeQuestion(q string) string {
	q = strings.ToValidUTF8(q, "\uFFFD")
	q = norm.NFC.String(q)
	q = strings.ReplaceAll(q, "\r\n", "\n")
	q = strings.ReplaceAll(q, "\r", "\n")
	// Trimmed before the lines are folded, which neither adds white space
	// at either end nor changes which lines are fences: that keeps the
	// result a fixed point.
	q = strings.TrimSpace(q)
	lines := strings.Split(q, "\n")
	code := false
	for i, line := range lines {
		isFence := strings.HasPrefix(strings.TrimLeftFunc(line, horizontalSpace), fence)
		if code && !isFence {
			continue
		}
		if isFence {
			code = !code
		}
		lines[i] = foldProse(line)
	}
	return strings.Join(lines, "\n")
}

// horizontalSpace reports the white space that separates words within a
// line.
func horizontalSpace(r rune) bool {
	return r == ' ' || r == '\t' || r == '\v' || r == '\f' || unicode.Is(unicode.Zs, r)
}

// foldProse drops a line's trailing white space and makes each run of
// white space after its indentation one space; the indentation and every
// other character stay.
func foldProse(line string) string {
	line = strings.TrimRightFunc(line, horizontalSpace)
	text := strings.TrimLeftFunc(line, horizontalSpace)
	indent := line[:len(line)-len(text)]
	var b strings.Builder
	b.Grow(len(line))
	b.WriteString(indent)
	gap := false
	for _, r := range text {
		if horizontalSpace(r) {
			gap = true
			continue
		}
		if gap {
			b.WriteByte(' ')
			gap = false
		}
		b.WriteRune(r) // text is valid UTF-8: every rune is written back as read
	}
	return b.String()
}
