package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/disgrafs/disgrafs/graph"
)

// Limits on requests.
const (
	MaxRelatedLimit = 10_000
	MaxWarmupInos   = 10_000_000
	MaxThreads      = 1024
)

// The Decode functions check a request body completely before the daemon acts
// on it; their errors are BadRequest (HTTP 400).

// DecodeFind decodes and parses a find request.
func DecodeFind(body []byte) (FindRequest, graph.Expr, error) {
	var req FindRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return req, nil, BadRequest{Err: fmt.Errorf("find request: %w", err)}
	}
	e, err := graph.Parse(req.Expr)
	if err != nil {
		return req, nil, BadRequest{Err: err}
	}
	return req, e, nil
}

// DecodeRelated decodes a related request; the limit defaults to 20.
func DecodeRelated(body []byte) (RelatedRequest, error) {
	var req RelatedRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return req, BadRequest{Err: fmt.Errorf("related request: %w", err)}
	}
	if req.Limit <= 0 {
		req.Limit = 20
	}
	if req.Limit > MaxRelatedLimit {
		return req, BadRequest{Err: fmt.Errorf("related request: limit %d over %d", req.Limit, MaxRelatedLimit)}
	}
	return req, nil
}

// DecodeUnmount decodes an unmount request; an empty body is a plain unmount.
func DecodeUnmount(body []byte) (UnmountRequest, error) {
	var req UnmountRequest
	if len(bytes.TrimSpace(body)) == 0 {
		return req, nil
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return req, BadRequest{Err: fmt.Errorf("unmount request: %w", err)}
	}
	return req, nil
}

// DecodeWarmup decodes a warmup request: one of tag, query or inodes, a
// known mode and a sane thread count (0 means the default).
func DecodeWarmup(body []byte) (WarmupRequest, error) {
	var req WarmupRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return req, BadRequest{Err: fmt.Errorf("warmup request: %w", err)}
	}
	switch req.Mode {
	case "", "warm", "check", "evict":
	default:
		return req, BadRequest{Err: fmt.Errorf("warmup mode %q: want warm, check or evict", req.Mode)}
	}
	if req.Threads < 0 || req.Threads > MaxThreads {
		return req, BadRequest{Err: fmt.Errorf("warmup threads %d: must be between 1 and %d", req.Threads, MaxThreads)}
	}
	given := 0
	for _, b := range []bool{req.Tag != "", req.Query != "", len(req.Inos) > 0} {
		if b {
			given++
		}
	}
	if given != 1 {
		return req, BadRequest{Err: errors.New("warmup request: give exactly one of a tag, a query or files")}
	}
	if len(req.Inos) > MaxWarmupInos {
		return req, BadRequest{Err: fmt.Errorf("warmup request: %d files, at most %d at once", len(req.Inos), MaxWarmupInos)}
	}
	if req.Tag != "" {
		if err := graph.ValidTag(req.Tag); err != nil {
			return req, BadRequest{Err: err}
		}
	}
	if req.Query != "" {
		if _, err := graph.Parse(req.Query); err != nil {
			return req, BadRequest{Err: err}
		}
	}
	return req, nil
}
