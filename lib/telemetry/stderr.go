package telemetry

import "os"

var stderr = os.Stderr
