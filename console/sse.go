package console

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// maxSSELine bounds one line of an upstream event stream: the gateway's
// events are a few hundred bytes; anything longer is not its feed.
const maxSSELine = 64 << 10

// sseEvent is one Server-Sent Event: its type and data. A comment line
// (": ping") yields an event with IsComment set and its text in Comment.
type sseEvent struct {
	Type      string
	Data      []byte
	IsComment bool
	Comment   string
}

// sseReader reads Server-Sent Events (the subset the gateway writes:
// "event:", "data:" and comment lines, events ended by a blank line).
type sseReader struct {
	sc *bufio.Scanner
}

func newSSEReader(r io.Reader) *sseReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxSSELine)
	return &sseReader{sc: sc}
}

var errSSELine = errors.New("event stream: line too long")

// Next returns the next event or comment. It returns io.EOF at the end of
// the stream, and a specific error for a malformed one.
func (s *sseReader) Next() (sseEvent, error) {
	var ev sseEvent
	var data [][]byte
	have := false
	for s.sc.Scan() {
		line := s.sc.Bytes()
		switch {
		case len(line) == 0:
			if have {
				ev.Data = bytes.Join(data, []byte("\n"))
				if ev.Type == "" {
					ev.Type = "message"
				}
				return ev, nil
			}
		case line[0] == ':':
			if !have {
				return sseEvent{IsComment: true, Comment: string(bytes.TrimSpace(line[1:]))}, nil
			}
		default:
			name, value, _ := bytes.Cut(line, []byte(":"))
			value = bytes.TrimPrefix(value, []byte(" "))
			switch string(name) {
			case "event":
				ev.Type, have = string(value), true
			case "data":
				data, have = append(data, append([]byte(nil), value...)), true
			case "id", "retry":
				// not used by the gateway's feed
			default:
				return sseEvent{}, fmt.Errorf("event stream: unknown field %q", truncate(string(name), 40))
			}
		}
	}
	if err := s.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return sseEvent{}, errSSELine
		}
		return sseEvent{}, err
	}
	return sseEvent{}, io.EOF
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
