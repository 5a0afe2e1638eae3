package analysis

import (
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"testing"

	"github.com/calmline/calmline/lib/audio"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
)

func testCall() *callv1.Call {
	return &callv1.Call{TenantId: "t", CallId: "c", Format: &callv1.MediaFormat{
		Codec: callv1.Codec_CODEC_PCMU, SampleRateHz: 8000,
		Channels: []callv1.ChannelRole{callv1.ChannelRole_CHANNEL_ROLE_CALLER, callv1.ChannelRole_CHANNEL_ROLE_AGENT}}}
}

func speech(seconds float64) []byte {
	n := int(seconds * 8000)
	pcm := make([]int16, 0, 2*n)
	for i := range n {
		t := float64(i) / 8000
		pcm = append(pcm, int16(5000*math.Sin(2*math.Pi*190*t)*(1+t/4)), int16(3000*math.Sin(2*math.Pi*120*t)))
	}
	return audio.Encode(nil, pcm, audio.CodecPCMU)
}

func TestSnapshotRestoreContinuesTheCall(t *testing.T) {
	data := speech(5)
	whole, _, err := New(testCall())
	if err != nil {
		t.Fatal(err)
	}
	whole.Write(data)
	want := append([]Second(nil), whole.Flush()...)

	first, _, _ := New(testCall())
	first.Write(data[:33333])
	got := append([]Second(nil), first.Seconds()...)
	st, err := Snapshot(first)
	if err != nil {
		t.Fatal(err)
	}
	second, f, err := Restore(testCall(), st)
	if err != nil {
		t.Fatal(err)
	}
	if f.Channels != 2 || f.SampleRate != 8000 {
		t.Errorf("restored format %+v", f)
	}
	second.Write(data[33333:])
	got = append(got, second.Flush()...)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("restored analysis differs from the uninterrupted one:\n got %+v\nwant %+v", got, want)
	}
	if !reflect.DeepEqual(second.Stats(), whole.Stats()) {
		t.Errorf("stats %+v; want %+v", second.Stats(), whole.Stats())
	}
}

func TestRestoreRefusesAnotherModel(t *testing.T) {
	an, _, _ := New(testCall())
	st, _ := Snapshot(an)
	// The same state labelled with another version.
	m := Model()
	other := binary.AppendUvarint(nil, uint64(len(m.Name)))
	other = append(other, m.Name...)
	other = binary.AppendUvarint(other, 5)
	other = append(other, "9.9.9"...)
	other = append(other, st[1+len(m.Name)+1+len(m.Version):]...)
	if _, _, err := Restore(testCall(), other); !errors.Is(err, ErrModelChanged) {
		t.Errorf("restoring another version: %v; want ErrModelChanged", err)
	}
	if _, _, err := Restore(testCall(), []byte{0xff}); err == nil {
		t.Error("garbage restored")
	}
	mono := testCall()
	mono.Format.Channels = mono.Format.Channels[:1]
	if _, _, err := Restore(mono, st); err == nil {
		t.Error("a stereo state restored into a mono call")
	}
}
