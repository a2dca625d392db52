package meta

import "database/sql"

// Tx is a write transaction of the store, for the few changes that must
// span aggregates: the feed hands one to each subscriber (Outbox.Consume)
// so that the work an event causes (the jobs a subscriber enqueues)
// commits with the subscriber's cursor. The stores' methods that take a
// Tx act inside it. A Tx is valid only during the call it is passed to;
// the zero Tx is not usable.
type Tx struct{ tx *sql.Tx }
