package testclock_test

import (
	"fmt"
	"time"

	"github.com/timetravel-ai/timetravel/internal/tooling/testclock"
)

func Example() {
	c := testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	now := c.Now // what the code under test is given
	c.Advance(90 * time.Second)
	fmt.Println(now().Format(time.TimeOnly))
	c.Set(time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC))
	fmt.Println(now().Format(time.DateTime))
	// Output:
	// 00:01:30
	// 2026-01-02 12:00:00
}
