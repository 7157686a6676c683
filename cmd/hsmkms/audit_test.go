package main

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseWhen(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in      string
		want    time.Time
		wantErr bool
	}{
		{in: "2025-01-31T00:00:00Z", want: time.Date(2025, 1, 31, 0, 0, 0, 0, time.UTC)},
		{in: "2025-01-31T02:00:00+02:00", want: time.Date(2025, 1, 31, 0, 0, 0, 0, time.UTC)},
		{in: "24h", want: now.Add(-24 * time.Hour)},
		{in: "0s", want: now},
		{in: "-1h", wantErr: true},
		{in: "yesterday", wantErr: true},
		{in: "2025-01-31", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseWhen(tc.in, now)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseWhen(%q) error = %v, want error %v", tc.in, err, tc.wantErr)
			}
			if err == nil && !got.Equal(tc.want) {
				t.Errorf("parseWhen(%q) = %v, want %v", tc.in, got, tc.want)
			}
			if err != nil && !strings.Contains(err.Error(), tc.in) {
				t.Errorf("error %q does not quote the input", err)
			}
		})
	}
}

func TestCLIRecord(t *testing.T) {
	t.Parallel()
	ok := cliRecord("keys grant", []string{"k1"}, "identity c1", nil)
	if ok.Kind != "cli" || ok.Actor == "" || ok.Status != "Success" || ok.Message != "identity c1" {
		t.Errorf("success record %+v", ok)
	}
	bad := cliRecord("keys grant", []string{"k1"}, "identity c1", errors.New("object not found"))
	if bad.Status != "Failed" || bad.Message != "identity c1: object not found" {
		t.Errorf("failure record %+v", bad)
	}
}
