package server

import (
	"context"
	"time"
)

func (s *Server) addStream(w *watch) {
	s.streamsMu.Lock()
	s.streams[w] = struct{}{}
	s.streamsMu.Unlock()
}

func (s *Server) removeStream(w *watch) {
	s.streamsMu.Lock()
	delete(s.streams, w)
	s.streamsMu.Unlock()
}

// behind counts the open revocation streams that have not yet sent a
// checkpoint at rev or later.
func (s *Server) behind(rev uint64) int {
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	n := 0
	for w := range s.streams {
		if w.sent.Load() < rev {
			n++
		}
	}
	return n
}

// DrainStreams waits until every open revocation stream has sent every
// event up to rev, checkpoint included (a stream ending meanwhile no
// longer counts), or until ctx ends, and returns how many were still
// behind (0: all drained). At a stop, rev is the store's revision once the
// last write finished: every revocation a client saw acknowledged then
// reaches every connected authorizer before the streams end.
func (s *Server) DrainStreams(ctx context.Context, rev uint64) int {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		n := s.behind(rev)
		if n == 0 {
			return 0
		}
		select {
		case <-ctx.Done():
			return n
		case <-t.C:
		}
	}
}
