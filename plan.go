package llmgateway

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/llmgw/caddy-llm-gateway/internal/reqbody"
	"github.com/llmgw/caddy-llm-gateway/keys"
	"github.com/llmgw/caddy-llm-gateway/router"
)

// attemptSpec is one planned attempt: the client, the model it is asked for and the body sent.
type attemptSpec struct {
	uc    *upstreamClient
	model string
	body  []byte
	probe bool // the breaker let this attempt through as its half-open probe
	// injectedUsage is set when the gateway added stream_options.include_usage upstream, so the
	// usage-only chunk is consumed rather than forwarded.
	injectedUsage bool
}

// planner yields the attempts of a request (SPEC §4): the candidates of its model in strategy
// order, skipping clients whose breaker is open and clients its body cannot be edited for, then
// those of each model fallback in turn, as far as the caller's gateway key may use their model.
// It is used once, from one goroutine.
type planner struct {
	g     *generation
	req   *apiRequest
	key   *keys.Entry // the caller's gateway key; nil without keys
	log   *zap.Logger
	chain router.FallbackChain

	buf     []int // scratch for the candidates of each hop, owned by the caller
	cands   []int // the current model's candidates, in attempt order once ordered
	pos     int   // the next candidate to consider
	ordered bool
	done    bool

	model     string // the model of the current hop
	fallbacks int    // model fallback hops taken

	// What the final error is chosen from when no attempt commits.
	attempted    bool          // an attempt was made
	transformErr error         // the first client skipped because its transforms failed
	retryAfter   time.Duration // the soonest a cooling client allows an attempt again
}

// start plans the attempts of req, admitted with key (nil without keys). It fails with 404 when
// no client serves the model. buf is scratch space for candidate lists: a planner that held its
// own would be self-referencing, and so be moved to the heap; the caller's is already there.
func (p *planner) start(g *generation, req *apiRequest, key *keys.Entry, log *zap.Logger, buf []int) *apiError {
	model := req.info.Model
	*p = planner{g: g, req: req, key: key, log: log, buf: buf[:0], model: model, retryAfter: time.Duration(math.MaxInt64)}
	p.cands = g.table.Candidates(model, p.buf)
	if len(p.cands) == 0 {
		return &apiError{
			status:  http.StatusNotFound,
			typ:     errTypeInvalidRequest,
			code:    errCodeModelNotFound,
			message: "The model `" + model + "` does not exist or no upstream serves it.",
		}
	}
	p.chain = g.table.NewFallbackChain(model, g.maxHops)
	return nil
}

// next returns the next attempt to make, or false when there is none left.
func (p *planner) next() (attemptSpec, bool) {
	g := p.g
	for !p.done {
		if !p.ordered {
			// Ordered when the hop starts: the strategy sees the in-flight counts of now.
			inflight := func(i int) int64 { return g.clients[i].state.InFlight.Load() }
			router.Order(g.strategy, g.table, p.cands, p.req.info.Keys, inflight, rand.Float64)
			p.ordered, p.pos = true, 0
		}
		for p.pos < len(p.cands) {
			uc := g.clients[p.cands[p.pos]]
			p.pos++
			ok, probe := uc.state.Breaker.Allow(g.policy, time.Now())
			if !ok {
				if d := uc.state.Breaker.RetryAfter(g.policy, time.Now()); d < p.retryAfter {
					p.retryAfter = d
				}
				continue
			}
			body, injected, err := bodyFor(p.req, uc, p.model)
			if err != nil {
				// A field this client's transforms must edit has the wrong type (say,
				// max_tokens is a string); a client that needs no such edit may still serve.
				if probe {
					uc.state.Breaker.Abandon()
				}
				if p.transformErr == nil {
					p.transformErr = fmt.Errorf("cannot apply the request transforms of client %s: %w", uc.Name, err)
				}
				continue
			}
			p.attempted = true
			return attemptSpec{uc: uc, model: p.model, body: body, probe: probe, injectedUsage: injected}, true
		}
		value, model, cands, err := p.chain.Next(p.cands, p.model, p.buf)
		if err == nil && p.key != nil && !p.key.Allows(model) {
			// The key's models bound what its calls reach, not only what they ask for: a caller
			// who can make every candidate fail (a body the upstream answers with 422, say) must
			// not reach a model its key may not use through the operator's fallback.
			err = errFallbackNotAllowed
		}
		if err != nil {
			if value != "" {
				p.log.Debug("model fallback not taken", zap.String("fallback", value), zap.Error(err))
			}
			p.done = true
			break
		}
		p.fallbacks++
		p.model, p.cands, p.ordered = model, cands, false
	}
	return attemptSpec{}, false
}

// errFallbackNotAllowed ends a fallback chain at a model the caller's gateway key may not use.
var errFallbackNotAllowed = errors.New("the gateway key may not use the fallback model")

// bodyFor returns the body to send to uc for model: the caller's bytes, edited only where
// one of the client's request transforms applies (SPEC §5). injectedUsage reports whether the
// edit asks the upstream for a usage chunk the caller did not ask for.
func bodyFor(c *apiRequest, uc *upstreamClient, model string) (body []byte, injectedUsage bool, err error) {
	var e reqbody.Edit
	switch {
	case uc.UpstreamModel != "":
		e.Model = uc.UpstreamModel
	case model != c.info.Model:
		e.Model = model
	}
	if c.multipart {
		if e.Model == "" {
			return c.body, false, nil
		}
		body, err = reqbody.ReplaceMultipartModel(c.r.Header.Get("Content-Type"), c.body, e.Model)
		return body, false, err
	}
	e.ExtraBody = uc.extraBody
	if c.ep == epChat || c.ep == epCompletions {
		e.Stop = uc.Stop
		e.MaxTokens = uc.MaxTokens
		// Only a body holding a think tag can need the edit: skip its full scan otherwise.
		e.StripThink = c.ep == epChat && uc.StripsThink() && mayHoldThink(c.body)
		e.IncludeUsage = c.stream && !c.info.IncludeUsage && uc.InjectsUsage()
	}
	body, err = reqbody.Apply(c.body, e)
	return body, e.IncludeUsage, err
}

// mayHoldThink reports whether body may hold a think block. Encoders escape < > / in many
// ways (\u003c, \/), but none escapes letters, so the word itself is a safe filter.
func mayHoldThink(body []byte) bool {
	return bytes.Contains(body, []byte("think"))
}
