package console

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine the console starts (views, upstream feeds, streams)
// ends with Shutdown.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
