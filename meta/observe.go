package meta

import "time"

// observeCommit reports a committed batch of n Updates that began at start to
// Options.OnCommit. An empty batch (every function failed and rolled back to its
// savepoint) still cost a commit, so it is reported too.
func (s *Store) observeCommit(start time.Time, n int) {
	if s.onCommit != nil {
		s.onCommit(time.Since(start), n)
	}
}
