package analysis

import (
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/calmline/calmline/lib/audio"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
)

// Checkpoints. fullcall must be able to lose the instance analysing a live
// call and go on elsewhere without re-analysing what it acknowledged, so the
// analyser's state is saved with each of the call's durable checkpoints and
// restored by the instance that resumes the call. Every analyser behind this
// package provides:
//
//   - MarshalBinary: its whole state — baselines, the frame, window and
//     second being accumulated, pending seconds, the call statistics — in a
//     versioned encoding whose size does not grow with the call;
//   - UnmarshalBinary, on an analyser New made for the same call: the state
//     restored so that the rest of the call analyses exactly as if nothing
//     had happened (the same seconds and statistics, bit for bit); a state
//     from another model version or for another shape of call is an error
//     and leaves the analyser as it was.
//
// Snapshot and Restore add the model's name and version around that state,
// so that a checkpoint is never restored into another model.
var _ interface {
	encoding.BinaryMarshaler
	encoding.BinaryUnmarshaler
} = (*Analyzer)(nil)

// ErrModelChanged is returned by Restore for a state another model (or
// model version) made; the call cannot continue bit-identically.
var ErrModelChanged = errors.New("the checkpoint was made by another analysis model")

// Snapshot returns the analyser's state, labelled with the model.
func Snapshot(an *Analyzer) ([]byte, error) {
	st, err := an.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	m := Model()
	b := make([]byte, 0, len(st)+len(m.Name)+len(m.Version)+4)
	b = binary.AppendUvarint(b, uint64(len(m.Name)))
	b = append(b, m.Name...)
	b = binary.AppendUvarint(b, uint64(len(m.Version)))
	b = append(b, m.Version...)
	return append(b, st...), nil
}

// Restore builds the analyser of a call from a Snapshot.
func Restore(call *callv1.Call, state []byte) (*Analyzer, audio.Format, error) {
	name, rest, ok := cutString(state)
	var version string
	if ok {
		version, rest, ok = cutString(rest)
	}
	if !ok {
		return nil, audio.Format{}, errors.New("restore: not an analyser snapshot")
	}
	if m := Model(); name != m.Name || version != m.Version {
		return nil, audio.Format{}, fmt.Errorf("restore: %w (%s %s; this is %s %s)", ErrModelChanged, name, version, m.Name, m.Version)
	}
	an, f, err := New(call)
	if err != nil {
		return nil, audio.Format{}, err
	}
	if err := an.UnmarshalBinary(rest); err != nil {
		return nil, audio.Format{}, fmt.Errorf("restore: %w", err)
	}
	return an, f, nil
}

func cutString(b []byte) (string, []byte, bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > 256 || uint64(len(b)-k) < n {
		return "", nil, false
	}
	return string(b[k : k+int(n)]), b[k+int(n):], true
}
