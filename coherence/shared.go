package coherence

// The change channel of a volume shared by several DisGraFS nodes through
// one Redis server.
//
// Who may hold what. Every node whose opens trust cached copies is a holder
// of everything it has cached: the registry of holders is one sorted set per
// volume (nodesKey), a member per trusting node, scored with the server time
// its lease ends. It is bounded by the number of nodes, not of files; a node
// that stops trusting, or stops, leaves it; a node that dies is dropped by
// the first writer that finds its lease over.
//
// The lease. A node renews its lease each time its own ping, published to
// the volume's change stream, comes back through its subscription and has
// been handled in order: a renewal proves that every change published before
// the ping was applied. A node trusts its copies only within DoubtAfter of
// the send time of its last successful renewal, which is well before the
// lease it renewed ends at the server (Lease, measured by the server from a
// later instant): when its stream stalls or breaks, the node stops trusting
// first, then writers stop waiting for it.
//
// A writer (Publish) sends what it changed, after the metadata engine has
// committed it, with one script that also reads the live holders, then waits
// until each holder has acknowledged the change or its lease has ended. An
// acknowledgement is sent after the change was applied (the kernel told to
// drop what it holds). A lost acknowledgement is recovered from the last
// message id each node records at its renewals. So once Publish returns, no
// node serves the state before the change: a signal the writer sends after
// its close reaches a reader that sees the change (close-to-open).
//
// Messages on the stream are JSON, with a volume-wide id from INCR.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Change is what a request of one node changed on the volume.
type Change struct {
	// Inodes whose data changed (a write closed, a truncate).
	Inodes []uint64 `json:"i,omitempty"`
	// Attrs: inodes whose attributes only changed (a chmod, an ACL), or
	// that a writer other than DisGraFS changed in some way (tracking).
	Attrs []uint64 `json:"a,omitempty"`
	// Dirs whose entries a writer other than DisGraFS changed (tracking):
	// which names is not known.
	Dirs []uint64 `json:"d,omitempty"`
	// Entries whose names were removed or now name another inode.
	Entries []Entry `json:"e,omitempty"`
}

// Entry is a name in a directory.
type Entry struct {
	Parent uint64 `json:"p"`
	Name   string `json:"n"`
}

// Empty reports whether the change names nothing.
func (c Change) Empty() bool {
	return len(c.Inodes) == 0 && len(c.Attrs) == 0 && len(c.Entries) == 0 && len(c.Dirs) == 0
}

// SharedConfig configures a Shared channel.
type SharedConfig struct {
	// Redis: the metadata engine's server (the volume's own database).
	Redis *redis.Options
	// Volume names the stream and registry keys (the volume's UUID).
	Volume string
	// Trust: this node trusts its copies (and so registers as a holder).
	// Without it the node only publishes its changes, so that trusting
	// nodes learn them.
	Trust bool
	// Lease, DoubtAfter, Ping: see the package comment of this file; zero
	// takes the defaults (4 s, 1.5 s, 250 ms).
	Lease, DoubtAfter, Ping time.Duration
	// Apply is called, in stream order and one at a time, with each change
	// another node published; the change is acknowledged when it returns.
	Apply func(Change)
	// Doubt is called (in its own goroutine) when trust lapses: the stream
	// broke, stalled or could not be renewed. Whatever was given to the
	// kernel on the strength of trust must be taken back.
	Doubt func()
	Log   *slog.Logger
	// Reg, if set, receives the channel's metrics (the coherence subsystem's).
	Reg prometheus.Registerer
}

// Shared is the change channel of a volume shared through Redis.
type Shared struct {
	cfg                     SharedConfig
	node                    string
	client, sub             *redis.Client
	nodesKey, seenKey       string
	streamKey, ackKey, idKy string

	// mu guards the trust state; wmu the waiters. They are never held
	// together, and no Redis command is sent under either.
	mu       sync.Mutex
	epoch    uint64
	trusting bool
	doubtAt  time.Time // trust lapses here unless renewed
	lastMsg  time.Time
	others   map[string]time.Time // other nodes, when their ping was last seen
	lastErr  string

	wmu     sync.Mutex
	waiters map[int64]*waiter // Publish calls waiting for acknowledgements, by message id

	queue chan message  // received stream messages, to the worker
	renew chan int64    // ids of own pings handled, to the renewer
	doubt chan struct{} // lapses, to the doubter
	conns int           // mu: connections the subscription made
	subID atomic.Int64  // Redis client id of the subscription's connection
	track *redis.Conn   // renewer: the connection whose key tracking redirects to the subscription
	acks  chan ack      // acknowledgements to send

	m sharedMetrics
}

type sharedMetrics struct {
	fallbacks, invalRecv, invalSent, waits, gaveUp, tracked atomic.Uint64
	waitHist                                                prometheus.Histogram
}

type message struct {
	ID     int64  `json:"id"`
	Node   string `json:"n"`
	Ping   bool   `json:"ping,omitempty"`
	Change Change `json:"c"`
}

type ack struct {
	writer string
	id     int64
}

type waiter struct {
	pending map[string]bool
	done    chan struct{}
}

// NewShared creates the channel; Run serves it.
func NewShared(cfg SharedConfig) (*Shared, error) {
	if cfg.Redis == nil || cfg.Volume == "" {
		return nil, errors.New("change channel: no Redis server or volume")
	}
	if cfg.Lease == 0 {
		cfg.Lease = 4 * time.Second
	}
	if cfg.DoubtAfter == 0 {
		cfg.DoubtAfter = 1500 * time.Millisecond
	}
	if cfg.Ping == 0 {
		cfg.Ping = 250 * time.Millisecond
	}
	if cfg.DoubtAfter >= cfg.Lease {
		return nil, fmt.Errorf("change channel: doubt after %v must be shorter than the lease %v", cfg.DoubtAfter, cfg.Lease)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	host, _ := os.Hostname()
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	s := &Shared{cfg: cfg, node: fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(rnd[:])),
		others: map[string]time.Time{}, waiters: map[int64]*waiter{},
		queue: make(chan message, 1024), renew: make(chan int64, 1), doubt: make(chan struct{}, 1), acks: make(chan ack, 1024)}
	prefix := "disgrafs:" + cfg.Volume + ":"
	s.nodesKey, s.seenKey, s.streamKey, s.idKy = prefix+"nodes", prefix+"seen", prefix+"changes", prefix+"msgid"
	s.ackKey = prefix + "ack:" + s.node
	opt := *cfg.Redis
	opt.PoolSize = 4
	s.client = redis.NewClient(&opt)
	sopt := *cfg.Redis
	sopt.ReadTimeout = -1 // a subscription waits as long as the stream is quiet
	// RESP2: Redis sends the tracked keys to a RESP2 subscription as
	// messages of __redis__:invalidate (RESP3 would get push replies).
	sopt.Protocol = 2
	sopt.OnConnect = func(ctx context.Context, cn *redis.Conn) error {
		// A new connection of the subscription: whatever was published
		// while it had none is lost.
		id, err := cn.ClientID(ctx).Result()
		s.mu.Lock()
		if s.conns++; s.conns > 1 {
			s.lapseLocked("the change stream reconnected")
		}
		s.mu.Unlock()
		if err != nil {
			return fmt.Errorf("the subscription's client id: %w", err)
		}
		s.subID.Store(id)
		return nil
	}
	s.sub = redis.NewClient(&sopt)
	s.m.waitHist = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "writer_wait_seconds",
		Help:    "How long a change of this node waited for the other trusting nodes to apply it (only changes some other node may hold).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)})
	if cfg.Reg != nil {
		counter := func(name, help string, v *atomic.Uint64) prometheus.Collector {
			return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v.Load()) })
		}
		cfg.Reg.MustRegister(s.m.waitHist,
			counter("fallbacks_total", "Times trust lapsed (the change stream broke, stalled or a renewal failed): opens asked the metadata engine until it was back.", &s.m.fallbacks),
			counter("invalidations_received_total", "Changes other nodes published that this node applied.", &s.m.invalRecv),
			counter("tracked_changes_total", "Changes of JuiceFS's inode and directory keys that Redis key tracking reported (every writer, the juicefs CLI included).", &s.m.tracked),
			counter("invalidations_sent_total", "Changes this node published to the other nodes.", &s.m.invalSent),
			counter("writer_waits_total", "Changes of this node that waited for other trusting nodes.", &s.m.waits),
			counter("writer_wait_expired_total", "Waits that ended on a node's lease running out instead of its acknowledgement.", &s.m.gaveUp),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "stream_last_message_age_seconds", Help: "Seconds since the change stream last delivered a message (pings arrive every few hundred ms)."},
				func() float64 {
					s.mu.Lock()
					defer s.mu.Unlock()
					if s.lastMsg.IsZero() {
						return -1
					}
					return time.Since(s.lastMsg).Seconds()
				}))
	}
	return s, nil
}

// Handle sets the callbacks (see SharedConfig); call it before Run.
func (s *Shared) Handle(apply func(Change), doubt func()) {
	s.cfg.Apply, s.cfg.Doubt = apply, doubt
}

// Ping checks that the server answers this channel's client (address,
// password, database).
func (s *Shared) Ping(ctx context.Context) error {
	if err := s.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("change channel: Redis: %w", err)
	}
	// The scripts run (EVAL, the registry's commands: an ACL may refuse
	// them); with no change, nothing is published.
	if _, _, err := s.publish(ctx, false, Change{}); err != nil {
		return fmt.Errorf("change channel: Redis refused its script: %w", err)
	}
	return nil
}

// Close releases a channel that will not be run (Run closes its own).
func (s *Shared) Close() error {
	_ = s.sub.Close()
	return s.client.Close()
}

// Node is this node's name in the registry.
func (s *Shared) Node() string { return s.node }

// Epoch returns the trust epoch, and whether copies may be trusted now.
func (s *Shared) Epoch() (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checkDoubtLocked(time.Now())
	return s.epoch, s.trusting
}

// checkDoubtLocked ends trust once it was not renewed in time.
func (s *Shared) checkDoubtLocked(now time.Time) {
	if s.trusting && now.After(s.doubtAt) {
		s.lapseLocked("the change stream was not renewed in time (stalled)")
	}
}

// lapseLocked ends trust: a new epoch voids everything trusted before.
func (s *Shared) lapseLocked(why string) {
	s.epoch++
	s.lastErr = why
	if !s.trusting {
		return
	}
	s.trusting = false
	s.m.fallbacks.Add(1)
	s.cfg.Log.Warn("change channel: trust lapsed, opens of cached files ask the metadata engine until it is back", "why", why)
	select { // to doubter
	case s.doubt <- struct{}{}:
	default: // one is pending already
	}
}

// doubter calls the Doubt callback after each lapse.
func (s *Shared) doubter(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.doubt:
			if s.cfg.Doubt != nil {
				s.cfg.Doubt()
			}
		}
	}
}

// State describes the channel.
func (s *Shared) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checkDoubtLocked(time.Now())
	if !s.cfg.Trust {
		return State{Mode: "check", Detail: "--open-check always: every open asks the metadata engine; this node's changes are published to the others over the Redis change stream"}
	}
	live := 0
	for _, t := range s.others {
		if time.Since(t) < s.cfg.Lease {
			live++
		}
	}
	d := fmt.Sprintf("Redis change stream, lease %v: opens of cached files known current need no metadata round trip; %d other node(s) seen", s.cfg.Lease, live)
	if !s.trusting {
		d = "Redis change stream not current (" + s.lastErr + "): every open asks the metadata engine until it is back"
	}
	return State{Mode: "stream", Trusted: s.trusting, Detail: d}
}

// Run serves the channel until ctx ends; it leaves the registry on return.
func (s *Shared) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	channels := []string{s.streamKey, s.ackKey}
	if s.cfg.Trust {
		channels = append(channels, trackingChannel)
	}
	ps := s.sub.Subscribe(ctx, channels...)
	var wg sync.WaitGroup
	for _, f := range []func(context.Context){s.work, s.pinger, s.renewer, s.acker, s.watch, s.doubter} {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); s.receive(ctx, ps) }()
	<-ctx.Done()
	_ = ps.Close() // ends a Receive blocked on the connection
	cancel()
	wg.Wait()
	lctx, lcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer lcancel()
	if err := s.client.ZRem(lctx, s.nodesKey, s.node).Err(); err != nil {
		s.cfg.Log.Debug("change channel: leaving the registry", "error", err)
	}
	if s.track != nil {
		_ = s.track.Close()
	}
	_ = s.sub.Close()
	return s.client.Close()
}

// receive reads the subscription. Any error may have lost messages: trust
// lapses, and comes back with the next renewal after the resubscription.
func (s *Shared) receive(ctx context.Context, ps *redis.PubSub) {
	for ctx.Err() == nil {
		v, err := ps.Receive(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.mu.Lock()
			s.lapseLocked("change stream: " + err.Error())
			s.mu.Unlock()
			select { // go-redis reconnects at the next Receive
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		msg, ok := v.(*redis.Message)
		if !ok {
			continue
		}
		s.mu.Lock()
		s.lastMsg = time.Now()
		s.mu.Unlock()
		if msg.Channel == s.ackKey {
			s.acked(msg.Payload)
			continue
		}
		if msg.Channel == trackingChannel {
			if c := trackedChange(msg.PayloadSlice); !c.Empty() {
				select {
				case s.queue <- message{Change: c}:
				case <-ctx.Done():
					return
				}
			}
			continue
		}
		var m message
		if err := json.Unmarshal([]byte(msg.Payload), &m); err != nil {
			s.cfg.Log.Warn("change channel: a message that is not ours on the stream", "error", err)
			continue
		}
		select {
		case s.queue <- m:
		case <-ctx.Done():
			return
		}
	}
}

// work handles stream messages in order.
func (s *Shared) work(ctx context.Context) {
	for {
		var m message
		select {
		case <-ctx.Done():
			return
		case m = <-s.queue:
		}
		switch {
		case m.Node == s.node && m.Ping:
			select { // the renewer takes the newest
			case s.renew <- m.ID:
			default:
				select {
				case <-s.renew:
				default:
				}
				s.renew <- m.ID
			}
		case m.Ping:
			s.mu.Lock()
			s.others[m.Node] = time.Now()
			s.mu.Unlock()
		case m.Node == s.node:
		case m.Node == "": // key tracking: nobody waits
			if s.cfg.Apply != nil {
				s.cfg.Apply(m.Change)
			}
			s.m.tracked.Add(1)
		default:
			if s.cfg.Apply != nil {
				s.cfg.Apply(m.Change)
			}
			s.m.invalRecv.Add(1)
			select {
			case s.acks <- ack{writer: m.Node, id: m.ID}:
			case <-ctx.Done():
				return
			}
		}
	}
}

// The scripts read the server's clock, so that leases do not depend on the
// nodes' clocks agreeing.
var (
	// KEYS: stream, id counter, nodes. ARGV: message without its id (a JSON
	// object's body after "{"), this node. Publishes when another node is
	// live (or always for a ping: ARGV[3] = "1"); returns the id, the time
	// and the other live nodes with their lease ends.
	publishScript = redis.NewScript(`
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local live = redis.call('ZRANGEBYSCORE', KEYS[3], now, '+inf', 'WITHSCORES')
local out = {0, now}
for i = 1, #live, 2 do
  if live[i] ~= ARGV[2] then
    out[#out + 1] = live[i]
    out[#out + 1] = live[i + 1]
  end
end
if #out > 2 or ARGV[3] == '1' then
  local id = redis.call('INCR', KEYS[2])
  out[1] = id
  redis.call('PUBLISH', KEYS[1], '{"id":' .. id .. ',' .. ARGV[1])
end
return out`)
	// KEYS: nodes, seen. ARGV: node, lease ms, id of the ping handled.
	renewScript = redis.NewScript(`
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('PEXPIRE', KEYS[1], 10 * tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[2], 10 * tonumber(ARGV[2]))
return now`)
	// KEYS: nodes, seen. ARGV: nodes. Returns, per node, the ms its lease
	// still runs (<= 0: over) and the last message id it handled.
	leaseScript = redis.NewScript(`
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local out = {}
for i, n in ipairs(ARGV) do
  local s = redis.call('ZSCORE', KEYS[1], n)
  local left = 0
  if s then left = tonumber(s) - now end
  out[#out + 1] = left
  out[#out + 1] = tonumber(redis.call('HGET', KEYS[2], n) or '0')
end
return out`)
)

// publish sends a message; see publishScript.
func (s *Shared) publish(ctx context.Context, ping bool, c Change) (int64, map[string]time.Duration, error) {
	body, err := json.Marshal(message{Node: s.node, Ping: ping, Change: c})
	if err != nil {
		return 0, nil, err
	}
	// body is {"id":0,...}: the script writes the real id.
	rest := body[len(`{"id":0,`):]
	p := "0"
	if ping {
		p = "1"
	}
	res, err := publishScript.Run(ctx, s.client, []string{s.streamKey, s.idKy, s.nodesKey}, string(rest), s.node, p).Slice()
	if err != nil {
		return 0, nil, err
	}
	if len(res) < 2 {
		return 0, nil, fmt.Errorf("publish script: %d values", len(res))
	}
	id, _ := res[0].(int64)
	now, _ := res[1].(int64)
	live := map[string]time.Duration{}
	for i := 2; i+1 < len(res); i += 2 {
		n, _ := res[i].(string)
		end, _ := strconv.ParseFloat(fmt.Sprint(res[i+1]), 64)
		live[n] = time.Duration(int64(end)-now) * time.Millisecond
	}
	return id, live, nil
}

// pinger publishes this node's pings.
func (s *Shared) pinger(ctx context.Context) {
	if !s.cfg.Trust {
		return
	}
	t := time.NewTicker(s.cfg.Ping)
	defer t.Stop()
	for {
		if _, _, err := s.publish(ctx, true, Change{}); err != nil && ctx.Err() == nil {
			s.cfg.Log.Debug("change channel: ping", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// renewer renews the lease after each own ping handled.
func (s *Shared) renewer(ctx context.Context) {
	for {
		var id int64
		select {
		case <-ctx.Done():
			return
		case id = <-s.renew:
		}
		sent := time.Now()
		rctx, cancel := context.WithTimeout(ctx, s.cfg.DoubtAfter)
		err := s.checkTracking(rctx)
		if err == nil {
			err = renewScript.Run(rctx, s.client, []string{s.nodesKey, s.seenKey}, s.node, s.cfg.Lease.Milliseconds(), id).Err()
		}
		cancel()
		s.mu.Lock()
		switch {
		case err != nil:
			if ctx.Err() == nil {
				s.lapseLocked("renewing the lease: " + err.Error())
			}
		case time.Now().Before(sent.Add(s.cfg.DoubtAfter)):
			s.checkDoubtLocked(time.Now()) // a lapse before this renewal still moves the epoch
			if !s.trusting {
				s.cfg.Log.Info("change channel: current, opens of cached files known current need no metadata round trip")
			}
			s.trusting = true
			s.doubtAt = sent.Add(s.cfg.DoubtAfter)
		}
		s.mu.Unlock()
	}
}

// watch ends trust when renewals stop, even when no open asks.
func (s *Shared) watch(ctx context.Context) {
	t := time.NewTicker(s.cfg.Ping / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.mu.Lock()
			s.checkDoubtLocked(now)
			s.mu.Unlock()
		}
	}
}

// acker sends acknowledgements, several per round trip when they queue up.
func (s *Shared) acker(ctx context.Context) {
	for {
		var batch []ack
		select {
		case <-ctx.Done():
			return
		case a := <-s.acks:
			batch = append(batch, a)
		}
	more:
		for len(batch) < 256 {
			select {
			case a := <-s.acks:
				batch = append(batch, a)
			default:
				break more
			}
		}
		pipe := s.client.Pipeline()
		for _, a := range batch {
			pipe.Publish(ctx, "disgrafs:"+s.cfg.Volume+":ack:"+a.writer, strconv.FormatInt(a.id, 10)+" "+s.node)
		}
		if _, err := pipe.Exec(ctx); err != nil && ctx.Err() == nil {
			// The writers find the change handled in the seen hash at
			// the next renewal.
			s.cfg.Log.Debug("change channel: acknowledging", "error", err)
		}
	}
}

// acked records an acknowledgement "<id> <node>".
func (s *Shared) acked(payload string) {
	var id int64
	var node string
	if _, err := fmt.Sscanf(payload, "%d %s", &id, &node); err != nil {
		return
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if w := s.waiters[id]; w != nil && w.pending[node] {
		delete(w.pending, node)
		if len(w.pending) == 0 {
			close(w.done)
		}
	}
}

// Publish tells the other nodes about a change this node's request made,
// after the metadata engine committed it, and returns once every other
// trusting node has applied it or lost its lease. An error means the other
// nodes may not know: the caller should fail its request.
func (s *Shared) Publish(ctx context.Context, c Change) error {
	if c.Empty() {
		return nil
	}
	// The change is committed: a transient error of the server is retried
	// for as long as a lease lasts, which is when a node that could not
	// hear us either would have stopped trusting.
	var (
		id   int64
		live map[string]time.Duration
		err  error
	)
	deadline := time.Now().Add(2 * s.cfg.Lease)
	for backoff := 10 * time.Millisecond; ; backoff = min(2*backoff, 500*time.Millisecond) {
		if id, live, err = s.publish(ctx, false, c); err == nil {
			break
		}
		if ctx.Err() != nil || time.Now().After(deadline) || errors.Is(err, redis.ErrClosed) {
			return fmt.Errorf("publishing a change to the other nodes: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
	}
	if len(live) == 0 {
		return nil
	}
	s.m.invalSent.Add(1)
	s.m.waits.Add(1)
	start := time.Now()
	defer func() { s.m.waitHist.Observe(time.Since(start).Seconds()) }()
	w := &waiter{pending: map[string]bool{}, done: make(chan struct{})}
	for n := range live {
		w.pending[n] = true
	}
	s.wmu.Lock()
	s.waiters[id] = w
	s.wmu.Unlock()
	defer func() {
		s.wmu.Lock()
		delete(s.waiters, id)
		s.wmu.Unlock()
	}()
	for {
		var wait time.Duration
		for _, d := range live {
			wait = max(wait, d)
		}
		timer := time.NewTimer(wait + 10*time.Millisecond)
		select {
		case <-w.done:
			timer.Stop()
			return nil
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
		// No acknowledgement from some node: its lease ran out, or it
		// renewed it (then it handled the change, and only the
		// acknowledgement was lost), or it is handling it still.
		s.wmu.Lock()
		nodes := make([]any, 0, len(w.pending))
		for n := range w.pending {
			nodes = append(nodes, n)
		}
		s.wmu.Unlock()
		if len(nodes) == 0 {
			return nil
		}
		res, err := leaseScript.Run(ctx, s.client, []string{s.nodesKey, s.seenKey}, nodes...).Int64Slice()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			res = nil // ask again after a short wait
			live = map[string]time.Duration{"": 100 * time.Millisecond}
			continue
		}
		live = map[string]time.Duration{}
		for i, n := range nodes {
			left, seen := res[2*i], res[2*i+1]
			if left <= 0 || seen >= id {
				if left <= 0 {
					s.m.gaveUp.Add(1)
				}
				s.acked(strconv.FormatInt(id, 10) + " " + n.(string))
				continue
			}
			live[n.(string)] = time.Duration(left) * time.Millisecond
		}
		if len(live) == 0 {
			return nil
		}
	}
}
