package auth_test

import (
	"errors"
	"fmt"

	"github.com/timetravel-ai/timetravel/internal/auth"
)

// A request's Authorization header gives the token; the token gives the
// key's id, which names its record. Errors say what is wrong without
// repeating what was sent.
func ExampleParseBearer() {
	const key = "ttk_0123456789abcdef_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"

	token, err := auth.ParseBearer("bearer  " + key)
	fmt.Println(token == key, err)

	id, err := auth.ParseKey(token)
	fmt.Println(id, err)

	_, err = auth.ParseBearer("")
	fmt.Println(err, errors.Is(err, auth.ErrInvalidKey))

	_, err = auth.ParseBearer("Basic dXNlcjpwYXNz")
	fmt.Println(err, errors.Is(err, auth.ErrInvalidKey))

	_, err = auth.ParseKey("ttk_0123456789abcdef_short")
	fmt.Println(errors.Is(err, auth.ErrMalformed))
	// Output:
	// true <nil>
	// 0123456789abcdef <nil>
	// no credentials false
	// malformed credentials: the Authorization scheme is not Bearer true
	// true
}
