package routes

import "sync/atomic"

// Live is a route policy read from a file that can be read again while
// serving (on SIGHUP): requests in flight keep the policy they started
// with, later ones get the new one. A file that fails to load leaves the
// current policy in place.
type Live struct {
	path string
	cur  atomic.Pointer[Policy]
}

// LoadLive reads the policy file at path.
func LoadLive(path string) (*Live, error) {
	p, err := Load(path)
	if err != nil {
		return nil, err
	}
	l := &Live{path: path}
	l.cur.Store(p)
	return l, nil
}

// Static wraps a policy that is never reloaded.
func Static(p *Policy) *Live {
	l := &Live{}
	l.cur.Store(p)
	return l
}

// Policy returns the current policy.
func (l *Live) Policy() *Policy { return l.cur.Load() }

// Path returns the file the policy is read from ("" for Static).
func (l *Live) Path() string { return l.path }

// Reload reads the file again and, when it parses, makes it the current
// policy and returns it. On error the current policy stays.
func (l *Live) Reload() (*Policy, error) {
	p, err := Load(l.path)
	if err != nil {
		return nil, err
	}
	l.cur.Store(p)
	return p, nil
}
