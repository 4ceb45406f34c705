package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/timetravel-ai/timetravel/internal/job"
)

// Error codes of the JSON error model (docs/api.md).
const (
	CodeMalformedJSON    = "malformed_json"
	CodeUnknownField     = "unknown_field"
	CodeInvalidField     = "invalid_field"
	CodeBodyTooLarge     = "body_too_large"
	CodeUnsupportedMedia = "unsupported_media_type"
	CodeJobNotFound      = "job_not_found"
	CodeJobFinished      = "job_finished"
	CodeNotFound         = "not_found"
	CodeMethodNotAllowed = "method_not_allowed"
	CodeUnavailable      = "unavailable"
	CodeInternal         = "internal"
	CodeUnauthorized     = "unauthorized"
	CodeInvalidHeader    = "invalid_header"
	// CodeIdempotencyMismatch: an Idempotency-Key reused with another body.
	CodeIdempotencyMismatch = "idempotency_key_reused"
	// CodeCacheDisabled: cache warming asked of a server without caching.
	CodeCacheDisabled = "cache_disabled"
	// CodeIdempotencyInProgress: the key's first request is still running.
	CodeIdempotencyInProgress = "idempotency_key_in_progress"
	// CodeForbidden: the caller is known but may not do this.
	CodeForbidden = "forbidden"
	// CodeQuotaExceeded: a limit of the caller's API key (named by the
	// error's limit field) or of the service is reached; 429.
	CodeQuotaExceeded = "quota_exceeded"
	// CodeModelNotAllowed: the request names a model that is not offered.
	CodeModelNotAllowed = "model_not_allowed"
	// CodeInvalidEncoding: the body is not valid UTF-8.
	CodeInvalidEncoding = "invalid_encoding"
	// CodeOverloaded: the backlog of member calls would keep a new job
	// waiting longer than MAX_BACKLOG_SECONDS or its deadline; 503 with
	// Retry-After.
	CodeOverloaded = "overloaded"
)

// ErrorBody is the JSON body of every error answer.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail says what went wrong; Field names the request field at fault.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
	// Limit names the quota reached (code quota_exceeded).
	Limit string `json:"limit,omitempty"`
	// Allowed lists the values the field may take, when they are few
	// (code model_not_allowed).
	Allowed []string `json:"allowed,omitempty"`
}

func abort(c *gin.Context, status int, code, field, format string, args ...any) {
	c.AbortWithStatusJSON(status, ErrorBody{Error: ErrorDetail{Code: code, Message: fmt.Sprintf(format, args...), Field: field}})
}

// decodeError turns a JSON decoding failure of a request body into the
// status, code, field and message to answer with.
func decodeError(err error) (int, ErrorDetail) {
	var (
		maxErr  *http.MaxBytesError
		synErr  *json.SyntaxError
		typeErr *json.UnmarshalTypeError
	)
	var fieldErr *job.FieldError
	switch {
	case errors.As(err, &fieldErr):
		return http.StatusBadRequest, ErrorDetail{Code: CodeInvalidField, Field: fieldErr.Field, Message: fieldErr.Message}
	case errors.As(err, &maxErr):
		return http.StatusRequestEntityTooLarge, ErrorDetail{Code: CodeBodyTooLarge, Message: fmt.Sprintf("request body is larger than %d bytes", maxErr.Limit)}
	case errors.Is(err, errNotObject):
		return http.StatusBadRequest, ErrorDetail{Code: CodeMalformedJSON, Message: errNotObject.Error()}
	case errors.Is(err, io.EOF):
		return http.StatusBadRequest, ErrorDetail{Code: CodeMalformedJSON, Message: "request body is empty: send a JSON object"}
	case errors.As(err, &synErr):
		return http.StatusBadRequest, ErrorDetail{Code: CodeMalformedJSON, Message: fmt.Sprintf("request body is not valid JSON (at byte %d): %v", synErr.Offset, synErr)}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return http.StatusBadRequest, ErrorDetail{Code: CodeMalformedJSON, Message: "request body ends in the middle of the JSON"}
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return http.StatusBadRequest, ErrorDetail{Code: CodeMalformedJSON, Message: "request body must be a JSON object"}
		}
		field := jsonPath(typeErr.Field)
		return http.StatusBadRequest, ErrorDetail{Code: CodeInvalidField, Field: field, Message: fmt.Sprintf("%s must be %s, not a JSON %s", field, describe(typeErr), typeErr.Value)}
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		name = strings.Trim(name, `"`)
		return http.StatusBadRequest, ErrorDetail{Code: CodeUnknownField, Field: name, Message: fmt.Sprintf("unknown field %q", name)}
	}
	return http.StatusBadRequest, ErrorDetail{Code: CodeMalformedJSON, Message: "request body is not valid: " + msg}
}

// jsonPath renders encoding/json's dotted field path ("time_points.2.date")
// as "time_points[2].date".
func jsonPath(p string) string {
	parts := strings.Split(p, ".")
	var b strings.Builder
	for i, s := range parts {
		if s != "" && strings.Trim(s, "0123456789") == "" {
			b.WriteString("[" + s + "]")
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(s)
	}
	return b.String()
}

func describe(e *json.UnmarshalTypeError) string {
	switch e.Type.Kind().String() {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "slice":
		return "a list"
	case "struct", "map":
		return "an object"
	case "int", "int64", "float64":
		return "a number"
	}
	if e.Type.Kind().String() == "ptr" && e.Type.Elem().Kind().String() == "string" {
		return "a string"
	}
	return "of another type"
}
