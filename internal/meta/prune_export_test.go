package meta

// BetweenBatches makes the pass call f after each batch of deletions it
// commits, before the next one begins (tests: what a push, a policy change
// or a cancellation does between batches).
func (p AutoPrune) BetweenBatches(f func()) AutoPrune {
	p.between = f
	return p
}
