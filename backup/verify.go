package backup

import (
	"context"
	"fmt"
	"io"
)

// Verify reads a whole backup file and checks its structure and, when keys
// is not nil, its seal (which needs only the backup KEK pair's seal key).
// Without keys Summary.Sealed is false: the structure is sound but the
// contents are unauthenticated.
func Verify(ctx context.Context, keys Keys, r io.Reader) (Summary, error) {
	s, err := scan(r, nil)
	if err != nil {
		return Summary{}, fmt.Errorf("verify backup: %w", err)
	}
	if keys == nil {
		return Summary{Header: s.header}, nil
	}
	k, err := findKEK(ctx, keys, s.header.BackupKEK.Fingerprint)
	if err != nil {
		return Summary{}, fmt.Errorf("verify backup: %w", err)
	}
	if err := checkSeal(ctx, keys, k, s); err != nil {
		return Summary{}, fmt.Errorf("verify backup: %w", err)
	}
	return Summary{Header: s.header, Sealed: true}, nil
}
