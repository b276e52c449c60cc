package keys

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults of a Redis store.
const (
	// DefaultStoreTimeout bounds every Redis call (dial, write, read): a dead or unreachable
	// store adds at most this much to a call before the failure mode applies.
	DefaultStoreTimeout = 200 * time.Millisecond
	// storeRetry is how long after a failed call the store is not tried again: calls in between
	// apply the failure mode at once, so an unreachable host costs one timeout per second, not
	// one per call. The first call after it probes the store again.
	storeRetry = time.Second
	// Lease is how long an admitted call holds its concurrency slot in a shared store when its
	// settlement never arrives (its node died, or the store was unreachable when it ended).
	Lease = 15 * time.Minute
	// monthTTL keeps a month's totals in the store until well after the month ended.
	monthTTL = 62 * 24 * time.Hour
)

// admitScript checks and counts one admission atomically. Every key of a gateway key lives
// under one hash tag, so the script also runs on a Redis Cluster.
//
// KEYS: 1 requests log (zset: ticket → µs), 2 token log (zset: "ticket:n" → µs), 3 open calls
// (zset: ticket → µs), 4 state (hash: last µs, tsum), 5 month totals (hash: tokens, usd).
// ARGV: 1 now µs, 2 window µs, 3 rpm, 4 tpm, 5 concurrency, 6 budget tokens, 7 budget usd,
// 8 ticket, 9 lease µs, 10 month ttl s.
//
// It returns {verdict, dimension, retry µs, requests in window, oldest request µs, token sum,
// oldest token µs, now µs}; oldest entries are -1 when a log is empty.
var admitScript = redis.NewScript(`
-- Lua turns numbers into strings with 14 digits: µs times need all of theirs.
local function n(x) return string.format('%.0f', x) end
local now, win = tonumber(ARGV[1]), tonumber(ARGV[2])
local rpm, tpm, conc = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local btok, busd = tonumber(ARGV[6]), tonumber(ARGV[7])
local ticket, lease = ARGV[8], tonumber(ARGV[9])
local last = tonumber(redis.call('HGET', KEYS[4], 'last') or '0')
if now < last then now = last end
redis.call('HSET', KEYS[4], 'last', n(now))
local edge = now - win
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', n(edge))
local tsum = tonumber(redis.call('HGET', KEYS[4], 'tsum') or '0')
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', n(edge))
for _, m in ipairs(gone) do
  tsum = tsum - tonumber(string.match(m, ':(%d+)$'))
end
if #gone > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', n(edge))
  redis.call('HSET', KEYS[4], 'tsum', n(tsum))
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', n(now - lease))
local mt = redis.call('HMGET', KEYS[5], 'tokens', 'usd')
local mtok, musd = tonumber(mt[1] or '0'), tonumber(mt[2] or '0')
local nreq = redis.call('ZCARD', KEYS[1])
local verdict, dim, retry = 0, 0, 0
if btok > 0 and mtok >= btok then
  verdict, dim = 2, 4
elseif busd > 0 and musd >= busd then
  verdict, dim = 2, 5
elseif conc > 0 and redis.call('ZCARD', KEYS[3]) >= conc then
  verdict, dim, retry = 1, 3, 1000000
elseif rpm > 0 and nreq >= rpm then
  local o = redis.call('ZRANGE', KEYS[1], nreq - rpm, nreq - rpm, 'WITHSCORES')
  verdict, dim, retry = 1, 1, tonumber(o[2]) + win - now
elseif tpm > 0 and tsum >= tpm then
  local sum, at = tsum, now
  for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')) do
    local n = tonumber(string.match(m, ':(%d+)$'))
    if n then
      sum = sum - n
    else
      at = tonumber(m)
      if sum < tpm then break end
    end
  end
  verdict, dim, retry = 1, 2, at + win - now
end
if verdict == 0 then
  if rpm > 0 then
    redis.call('ZADD', KEYS[1], n(now), ticket)
    nreq = nreq + 1
  end
  redis.call('ZADD', KEYS[3], n(now), ticket)
  redis.call('PEXPIRE', KEYS[3], n(math.floor(lease / 1000)))
end
local win_ms = n(math.floor(win / 1000) + 1000)
redis.call('PEXPIRE', KEYS[1], win_ms)
redis.call('PEXPIRE', KEYS[2], win_ms)
redis.call('PEXPIRE', KEYS[4], win_ms)
local oreq, otok = -1, -1
local o = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #o > 0 then oreq = tonumber(o[2]) end
o = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #o > 0 then otok = tonumber(o[2]) end
return {verdict, dim, retry, nreq, oreq, tsum, otok, now}
`)

// settleScript settles one call atomically: it releases the call's concurrency slot, logs its
// tokens in the window and adds them and its cost to the month's totals.
//
// KEYS: 1 token log, 2 open calls, 3 state, 4 month totals (as in admitScript).
// ARGV: 1 now µs, 2 window µs, 3 ticket, 4 tokens, 5 usd, 6 month ttl s.
var settleScript = redis.NewScript(`
-- Lua turns numbers into strings with 14 digits: µs times need all of theirs.
local function n(x) return string.format('%.0f', x) end
local now, win = tonumber(ARGV[1]), tonumber(ARGV[2])
local ticket, tokens, usd = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREM', KEYS[2], ticket)
local last = tonumber(redis.call('HGET', KEYS[3], 'last') or '0')
if now < last then now = last end
redis.call('HSET', KEYS[3], 'last', n(now))
if tokens > 0 then
  redis.call('ZADD', KEYS[1], n(now), ticket .. ':' .. ARGV[4])
  redis.call('HINCRBY', KEYS[3], 'tsum', ARGV[4])
  redis.call('HINCRBY', KEYS[4], 'tokens', ARGV[4])
end
if usd > 0 then
  redis.call('HINCRBYFLOAT', KEYS[4], 'usd', ARGV[5])
end
if tokens > 0 or usd > 0 then
  redis.call('EXPIRE', KEYS[4], ARGV[6])
end
local win_ms = n(math.floor(win / 1000) + 1000)
redis.call('PEXPIRE', KEYS[1], win_ms)
redis.call('PEXPIRE', KEYS[3], win_ms)
return 1
`)

// seedScript sets a month's totals only when the store holds none for that month.
// KEYS: 1 month totals. ARGV: 1 tokens, 2 usd, 3 month ttl s.
var seedScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'tokens', ARGV[1], 'usd', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
`)

// RedisOptions configure a Redis store.
type RedisOptions struct {
	// Timeout bounds every Redis call. Default: DefaultStoreTimeout.
	Timeout time.Duration
	// FailClosed refuses calls (Unavailable) while the store is unreachable; otherwise they
	// are counted in the in-process fallback store.
	FailClosed bool
	// OnFailure is called for every store call that failed or was skipped as the store is
	// down (to log and count it).
	OnFailure func(error)
}

// Redis is a Store shared by several gateways: its counters live in Redis (or Valkey), updated
// by server-side scripts, one round trip per admission and one per settlement.
//
// Times come from the calling node's clock (passed as arguments), not Redis's TIME: the nodes'
// clocks are assumed to agree to well under a second (NTP). A node whose clock runs behind
// logs its entries at the latest time the key has seen, so a key's logs never go back in time;
// skew shifts window edges by at most the skew.
type Redis struct {
	client    redis.UniversalClient
	opts      RedisOptions
	local     *Memory // counts while the store is unreachable (fail open)
	node      string  // random, makes tickets unique across nodes
	seq       atomic.Uint64
	downUntil atomic.Int64 // unix ns before which the store is not tried again
}

// ParseRedisURL checks a store URL: redis:// or rediss:// (TLS), optional user and password,
// host:port and database number.
func ParseRedisURL(u string) (*redis.Options, error) {
	if !strings.HasPrefix(u, "redis://") && !strings.HasPrefix(u, "rediss://") {
		return nil, fmt.Errorf("store: want redis://[user:password@]host:port/db or rediss://…, got a URL of another scheme")
	}
	o, err := redis.ParseURL(u)
	if err != nil {
		// The error may quote the URL, password included.
		return nil, errors.New("store: malformed redis URL")
	}
	return o, nil
}

// NewRedisClient returns a client of the store at url with every call bounded by timeout.
// It does not connect: connections are made (and remade) as calls need them.
func NewRedisClient(url string, timeout time.Duration) (*redis.Client, error) {
	o, err := ParseRedisURL(url)
	if err != nil {
		return nil, err
	}
	if timeout <= 0 {
		timeout = DefaultStoreTimeout
	}
	o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = timeout, timeout, timeout, timeout
	o.MaxRetries = -1 // a retry would double the latency a dead store adds
	o.ContextTimeoutEnabled = true
	return redis.NewClient(o), nil
}

// NewRedis returns a store on client; the client is the caller's to close.
func NewRedis(client redis.UniversalClient, opts RedisOptions) *Redis {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultStoreTimeout
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &Redis{client: client, opts: opts, local: NewMemory(), node: hex.EncodeToString(b[:])}
}

// Load loads the scripts into the store, so that the first calls need no second round trip.
// An error is not fatal: the scripts are loaded on first use.
func (r *Redis) Load() error {
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.Timeout)
	defer cancel()
	for _, s := range []*redis.Script{admitScript, settleScript, seedScript} {
		if err := s.Load(ctx, r.client).Err(); err != nil {
			return err
		}
	}
	return nil
}

// Local is the in-process store used while the shared one is unreachable.
func (r *Redis) Local() *Memory { return r.local }

func redisKeys(name string, now time.Time) [5]string {
	p := "llmgw:{" + name + "}:"
	y, m, _ := now.Local().Date()
	return [5]string{p + "req", p + "tok", p + "open", p + "state", p + "month:" + strconv.Itoa(y*100+int(m))}
}

func micros(d time.Duration) int64 { return int64(d / time.Microsecond) }

// run runs script s, unless the store failed less than storeRetry ago.
func (r *Redis) run(s *redis.Script, keys []string, args ...any) (any, error) {
	if until := r.downUntil.Load(); until != 0 && time.Now().UnixNano() < until {
		if r.opts.OnFailure != nil {
			r.opts.OnFailure(errStoreDown)
		}
		return nil, errStoreDown
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.Timeout)
	defer cancel()
	v, err := s.Run(ctx, r.client, keys, args...).Result()
	if err != nil {
		r.downUntil.Store(time.Now().Add(storeRetry).UnixNano())
		if r.opts.OnFailure != nil {
			r.opts.OnFailure(err)
		}
		return nil, err
	}
	r.downUntil.Store(0)
	return v, nil
}

var errStoreDown = errors.New("key store unreachable: retrying within a second")

// Admit implements Store.
func (r *Redis) Admit(name string, lim Limits, now time.Time) Decision {
	ks := redisKeys(name, now)
	ticket := r.node + "-" + strconv.FormatUint(r.seq.Add(1), 36)
	v, err := r.run(admitScript, ks[:], now.UnixMicro(), micros(Window), lim.RPM, lim.TPM, lim.Concurrency,
		lim.BudgetTokens, strconv.FormatFloat(lim.BudgetUSD, 'f', -1, 64), ticket, micros(Lease), int64(monthTTL/time.Second))
	a, ok := v.([]any)
	if err == nil && (!ok || len(a) != 8) {
		// Not our script's answer (another server on the port, a proxy): a failure like any other.
		err = fmt.Errorf("key store: unexpected admission reply %T", v)
		if r.opts.OnFailure != nil {
			r.opts.OnFailure(err)
		}
	}
	if err != nil {
		if r.opts.FailClosed {
			return Decision{Verdict: Unavailable}
		}
		return r.local.Admit(name, lim, now)
	}
	n := make([]int64, 8)
	for i := range a {
		n[i], _ = a[i].(int64)
	}
	d := Decision{Verdict: Verdict(n[0]), Dimension: Dimension(n[1])}
	at := n[7]
	if d.Verdict == RateLimited {
		d.RetryAfter = retryAfter(n[2] * int64(time.Microsecond))
	}
	if d.Verdict == Admitted {
		d.Ticket = Ticket(ticket)
	}
	if lim.RPM > 0 {
		d.Requests = Quota{Limit: lim.RPM, Remaining: max(lim.RPM-n[3], 0)}
		if n[4] >= 0 {
			d.Requests.Reset = time.Duration(n[4]+micros(Window)-at) * time.Microsecond
		}
	}
	if lim.TPM > 0 {
		d.Tokens = Quota{Limit: lim.TPM, Remaining: max(lim.TPM-n[5], 0)}
		if n[6] >= 0 {
			d.Tokens.Reset = time.Duration(n[6]+micros(Window)-at) * time.Microsecond
		}
	}
	return d
}

// Settle implements Store. A call admitted by the fallback store (no ticket) settles there;
// one admitted by Redis settles in Redis, or in the fallback when Redis is unreachable (its
// slot in Redis is then freed by the Lease).
func (r *Redis) Settle(name string, t Ticket, tokens int64, usd float64, now time.Time) {
	if t == "" {
		r.local.Settle(name, "", tokens, usd, now)
		return
	}
	ks := redisKeys(name, now)
	_, err := r.run(settleScript, []string{ks[1], ks[2], ks[3], ks[4]}, now.UnixMicro(), micros(Window), string(t),
		tokens, strconv.FormatFloat(usd, 'f', -1, 64), int64(monthTTL/time.Second))
	if err != nil {
		r.local.Settle(name, "", tokens, usd, now)
		// The fallback never saw this call's admission: its slot there is not held.
	}
}

// MonthTotals implements Store: the store's totals, or the fallback's when it is unreachable.
func (r *Redis) MonthTotals(name string, now time.Time) Totals {
	ks := redisKeys(name, now)
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.Timeout)
	defer cancel()
	v, err := r.client.HMGet(ctx, ks[4], "tokens", "usd").Result()
	if err != nil {
		return r.local.MonthTotals(name, now)
	}
	var t Totals
	if s, ok := v[0].(string); ok {
		t.Tokens, _ = strconv.ParseInt(s, 10, 64)
	}
	if s, ok := v[1].(string); ok {
		t.USD, _ = strconv.ParseFloat(s, 64)
	}
	return t
}

// AddMonth implements Store as a seed: the totals are set only when the store holds none for
// key name's month, so that the first node to start seeds them from its audit database and
// the others (or restarts) leave the fleet's totals alone. The fallback store gets them too.
func (r *Redis) AddMonth(name string, t Totals, now time.Time) {
	r.local.AddMonth(name, t, now)
	ks := redisKeys(name, now)
	_, _ = r.run(seedScript, ks[4:], t.Tokens, strconv.FormatFloat(t.USD, 'f', -1, 64), int64(monthTTL/time.Second))
}
