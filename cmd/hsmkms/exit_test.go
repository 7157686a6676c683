package main

import (
	"errors"
	"fmt"
	"testing"
)

func TestExitCode(t *testing.T) {
	t.Parallel()
	cause := errors.New("cause")
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"unmarked", cause, exitFailure},
		{"config", withExit(exitConfig, cause), exitConfig},
		{"token, wrapped further", fmt.Errorf("serve: %w", withExit(exitToken, cause)), exitToken},
		{"outermost mark wins", withExit(exitStore, withExit(exitToken, cause)), exitStore},
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("%s: exitCode = %d, want %d", tt.name, got, tt.want)
		}
		if !errors.Is(tt.err, cause) || tt.err.Error() == "" {
			t.Errorf("%s: the mark hides the cause: %v", tt.name, tt.err)
		}
	}
	if withExit(exitConfig, nil) != nil {
		t.Error("withExit(code, nil) != nil")
	}
}
