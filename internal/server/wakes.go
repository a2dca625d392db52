package server

import "sync"

// queueWakes routes the store's "a job was enqueued" (meta.WakeOnEnqueue)
// to the worker of that job's queue in this process, once the worker
// exists: a committed enqueue wakes an idle worker at once, and a queue
// nothing was enqueued to is not woken at all.
type queueWakes struct {
	mu    sync.RWMutex
	wakes map[string]func()
}

// set makes wake the waker of queue's worker.
func (q *queueWakes) set(queue string, wake func()) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.wakes == nil {
		q.wakes = map[string]func(){}
	}
	q.wakes[queue] = wake
}

// wake wakes queue's worker, if it has one; it never blocks.
func (q *queueWakes) wake(queue string) {
	q.mu.RLock()
	w := q.wakes[queue]
	q.mu.RUnlock()
	if w != nil {
		w()
	}
}
