// Package faultproxy is a TCP proxy on loopback for fault-injection tests:
// it sits between a client (the authorizer) and a server (the authority)
// and, on command, delays, blackholes, cuts or pauses the connections that
// pass through it, and resumes normal forwarding.
//
// Each accepted connection is paired with a connection to the target; each
// direction of a pair is one reader goroutine and one writer goroutine
// joined by a bounded queue of chunks, so a proxy never holds more than
// QueueChunks×ChunkSize bytes per direction of a connection: when the
// queue is full the reader stops reading and TCP flow control pushes back
// on the sender, as a slow network would.
//
// Modes (the zero state is Forward):
//
//   - Forward: bytes go through as soon as they are read.
//   - Delay(d): each chunk is written d after it was read (order kept).
//   - Pause: nothing is written in either direction; connections stay open;
//     bytes already read wait in the queue (and the senders' kernel buffers
//     fill), and all of them are delivered on Resume.
//   - Blackhole: every byte read is discarded, as a network path that
//     accepts packets and delivers none. A connection that lost bytes can
//     no longer carry a valid byte stream (TCP never delivers a stream with
//     a hole), so Resume closes it; new connections then work.
//   - Cut: every connection is closed at once, and new ones are accepted
//     and reset at once (the dialer sees a reset) until Resume.
//
// Close closes the listener and every connection and waits for every
// goroutine of the proxy to return.
package faultproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// ChunkSize is the largest read, and so the largest queued chunk.
const ChunkSize = 32 << 10

// QueueChunks is how many chunks one direction of a connection may hold
// between its reader and its writer.
const QueueChunks = 16

// Mode is what the proxy does to the bytes it reads.
type Mode int

// The modes; see the package documentation.
const (
	Forward Mode = iota
	Delayed
	Paused
	Blackholed
	Cut
)

func (m Mode) String() string {
	switch m {
	case Forward:
		return "forward"
	case Delayed:
		return "delay"
	case Paused:
		return "pause"
	case Blackholed:
		return "blackhole"
	case Cut:
		return "cut"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// Stats are counters of a proxy's life.
type Stats struct {
	Accepted  uint64 // connections accepted and paired with the target
	Refused   uint64 // connections reset at once because the proxy was cut
	DialFails uint64 // connections closed because the target could not be dialled
	Forwarded uint64 // bytes written to either side
	Dropped   uint64 // bytes discarded by a blackhole
	Open      int    // pairs open now
}

// Proxy is a running proxy. Its methods are safe for concurrent use.
type Proxy struct {
	target string
	ln     net.Listener
	wg     sync.WaitGroup // every goroutine of the proxy

	mu      sync.Mutex
	mode    Mode
	delay   time.Duration
	changed chan struct{} // closed, and replaced, at every mode change
	closed  bool
	done    chan struct{} // closed by Close
	pairs   map[*pair]struct{}
	stats   Stats
}

// New starts a proxy listening on a free port of 127.0.0.1 that forwards
// to target (host:port).
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	p := &Proxy{
		target:  target,
		ln:      ln,
		changed: make(chan struct{}),
		done:    make(chan struct{}),
		pairs:   map[*pair]struct{}{},
	}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the address clients dial.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Mode returns the current mode and, for Delayed, the delay.
func (p *Proxy) Mode() (Mode, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode, p.delay
}

// Stats returns the counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Open = len(p.pairs)
	return s
}

// Delay writes each chunk d after it was read, from now on (chunks already
// queued are timed from their read with the new delay). Delay(0) is Resume.
func (p *Proxy) Delay(d time.Duration) {
	if d <= 0 {
		p.Resume()
		return
	}
	p.setMode(Delayed, d)
}

// Pause stops forwarding in both directions and keeps the connections open.
func (p *Proxy) Pause() { p.setMode(Paused, 0) }

// Blackhole discards every byte read from now on.
func (p *Proxy) Blackhole() { p.setMode(Blackholed, 0) }

// Cut closes every connection and resets new ones until Resume.
func (p *Proxy) Cut() { p.setMode(Cut, 0) }

// Resume goes back to forwarding at once. Connections that lost bytes in a
// blackhole are closed.
func (p *Proxy) Resume() { p.setMode(Forward, 0) }

func (p *Proxy) setMode(m Mode, d time.Duration) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.mode, p.delay = m, d
	close(p.changed)
	p.changed = make(chan struct{})
	var kill []*pair
	for pr := range p.pairs {
		if m == Cut || (m == Forward || m == Delayed) && pr.lossy() {
			kill = append(kill, pr)
		}
	}
	p.mu.Unlock()
	for _, pr := range kill {
		pr.close()
	}
}

// state returns the mode, the delay and the channel closed at the next
// change.
func (p *Proxy) state() (Mode, time.Duration, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode, p.delay, p.changed
}

// Close closes the listener and every connection and waits for the proxy's
// goroutines to return.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	pairs := make([]*pair, 0, len(p.pairs))
	for pr := range p.pairs {
		pairs = append(pairs, pr)
	}
	p.mu.Unlock()
	err := p.ln.Close()
	for _, pr := range pairs {
		pr.close()
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient accept error (too many files): try again shortly,
			// unless closed meanwhile.
			select {
			case <-p.done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		p.mu.Lock()
		if p.mode == Cut || p.closed {
			p.stats.Refused++
			p.mu.Unlock()
			reset(c)
			continue
		}
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(c)
	}
}

// reset closes c so that the peer sees a reset rather than an orderly end.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	d := net.Dialer{Timeout: 5 * time.Second}
	server, err := d.Dial("tcp", p.target)
	if err != nil {
		p.mu.Lock()
		p.stats.DialFails++
		p.mu.Unlock()
		reset(client)
		return
	}
	pr := &pair{a: client, b: server, done: make(chan struct{})}
	p.mu.Lock()
	if p.closed || p.mode == Cut {
		// Cut or closed while dialling.
		p.stats.Refused++
		p.mu.Unlock()
		reset(client)
		reset(server)
		return
	}
	p.pairs[pr] = struct{}{}
	p.stats.Accepted++
	p.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(pr, client, server) }()
	go func() { defer wg.Done(); p.pipe(pr, server, client) }()
	wg.Wait()
	pr.close()
	p.mu.Lock()
	delete(p.pairs, pr)
	p.mu.Unlock()
}

// pair is one proxied connection: a (client side) and b (target side).
type pair struct {
	a, b net.Conn

	done chan struct{} // closed by close

	mu     sync.Mutex
	lost   bool // a blackhole discarded some of its bytes
	closed bool
}

func (pr *pair) markLost() {
	pr.mu.Lock()
	pr.lost = true
	pr.mu.Unlock()
}

func (pr *pair) lossy() bool {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return pr.lost
}

func (pr *pair) close() {
	pr.mu.Lock()
	if pr.closed {
		pr.mu.Unlock()
		return
	}
	pr.closed = true
	close(pr.done)
	pr.mu.Unlock()
	_ = pr.a.Close()
	_ = pr.b.Close()
}

// chunk is bytes read from one side, or the end of that side (eof).
type chunk struct {
	data []byte
	at   time.Time
	eof  bool
}

// pipe copies src to dst through a bounded queue, obeying the mode. It
// returns when both its reader and its writer are done; an error on either
// side closes the pair.
func (p *Proxy) pipe(pr *pair, src, dst net.Conn) {
	q := make(chan chunk, QueueChunks)
	stop := make(chan struct{}) // closed by the writer when it gives up
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(q)
		for {
			buf := make([]byte, ChunkSize)
			n, err := src.Read(buf)
			if n > 0 {
				if m, _, _ := p.state(); m == Blackholed {
					p.drop(pr, n)
				} else {
					select {
					case q <- chunk{data: buf[:n], at: time.Now()}:
					case <-stop:
						return
					}
				}
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					select {
					case q <- chunk{eof: true, at: time.Now()}:
					case <-stop:
					}
				} else {
					pr.close()
				}
				return
			}
		}
	}()
	p.write(pr, q, dst)
	close(stop)
	wg.Wait()
}

// write is the writer of one direction.
func (p *Proxy) write(pr *pair, q <-chan chunk, dst net.Conn) {
	for c := range q {
		if !p.await(pr, c) {
			pr.close()
			return
		}
		if m, _, _ := p.state(); m == Blackholed {
			if c.eof {
				// The end is not forwarded either; Resume closes the pair.
				return
			}
			p.drop(pr, len(c.data))
			continue
		}
		if c.eof {
			if tc, ok := dst.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
				return
			}
			pr.close()
			return
		}
		n, err := dst.Write(c.data)
		p.mu.Lock()
		p.stats.Forwarded += uint64(n)
		p.mu.Unlock()
		if err != nil {
			pr.close()
			return
		}
	}
}

// await waits until c may be written (or dropped), and returns false if
// the proxy closed meanwhile.
func (p *Proxy) await(pr *pair, c chunk) bool {
	for {
		m, d, changed := p.state()
		var wait <-chan time.Time
		var timer *time.Timer
		switch m {
		case Forward, Blackholed:
			return true
		case Delayed:
			due := time.Until(c.at.Add(d))
			if due <= 0 {
				return true
			}
			timer = time.NewTimer(due)
			wait = timer.C
		case Paused, Cut:
			// Paused: hold. Cut: the pair is being closed; hold until then.
		}
		select {
		case <-wait:
			return true
		case <-changed:
		case <-pr.done:
			return false
		case <-p.done:
			return false
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

func (p *Proxy) drop(pr *pair, n int) {
	pr.markLost()
	p.mu.Lock()
	p.stats.Dropped += uint64(n)
	p.mu.Unlock()
}
