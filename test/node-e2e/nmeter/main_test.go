package main

import (
	"testing"
	"time"
)

func TestRender(t *testing.T) {
	now := time.Date(2026, 12, 4, 10, 36, 26, 104_567_000, time.UTC)
	for format, want := range map[string]string{
		"%3t":     "10:36:26.104",
		"%t":      "10:36:26",
		"x %6t y": "x 10:36:26.104567 y",
		"%%c 50%": "%%c 50%",
	} {
		if got := render(format, now); got != want {
			t.Errorf("render(%q) = %q, want %q", format, got, want)
		}
	}
}

func TestParseArgs(t *testing.T) {
	for _, tt := range []struct {
		args   []string
		delay  int
		format string
		bad    bool
	}{
		{args: []string{"-d0", "%3t"}, delay: 0, format: "%3t"},
		{args: []string{"-d", "250", "%t"}, delay: 250, format: "%t"},
		{args: []string{"%t"}, delay: 1000, format: "%t"},
		{args: []string{"-dx", "%t"}, bad: true},
		{args: []string{}, bad: true},
	} {
		d, f, err := parseArgs(tt.args)
		if (err != nil) != tt.bad || (!tt.bad && (d != tt.delay || f != tt.format)) {
			t.Errorf("parseArgs(%q) = %d, %q, %v", tt.args, d, f, err)
		}
	}
}
