package api

import "testing"

// TestImportSlots: the server-wide bound holds across callers, a caller's
// own bound holds below it, a release frees exactly one slot however often
// it is called, and caller "" (auth mode none) meets only the server's.
func TestImportSlots(t *testing.T) {
	s := newImportSlots(2, 3)
	relA, ok := s.acquire("alice")
	if !ok {
		t.Fatal("alice's 1st import refused")
	}
	if _, ok := s.acquire("alice"); !ok {
		t.Fatal("alice's 2nd import refused")
	}
	if _, ok := s.acquire("alice"); ok {
		t.Fatal("alice's 3rd import accepted over her bound of 2")
	}
	if _, ok := s.acquire("bob"); !ok {
		t.Fatal("bob's 1st import refused")
	}
	if _, ok := s.acquire("carol"); ok {
		t.Fatal("a 4th import accepted over the server's bound of 3")
	}
	relA()
	relA()
	if _, ok := s.acquire("carol"); !ok {
		t.Fatal("carol's import refused after one ended")
	}
	if _, ok := s.acquire(""); ok {
		t.Fatal("an import accepted over the server's bound")
	}
	n := newImportSlots(1, 3)
	for i := range 3 {
		if _, ok := n.acquire(""); !ok {
			t.Fatalf("import %d of auth mode none refused below the server's bound", i+1)
		}
	}
	if _, ok := n.acquire(""); ok {
		t.Fatal("auth mode none: an import accepted over the server's bound")
	}
}
