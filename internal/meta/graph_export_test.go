package meta

import "context"

// WithAfterBatch returns the move with fn run after each batch of
// FireBaseMoved commits (fired: the events appended so far); an error
// of fn ends the move with it, as a failure of the next batch would.
func WithAfterBatch(mv BaseMove, fn func(ctx context.Context, fired int) error) BaseMove {
	mv.afterBatch = fn
	return mv
}
