package coherence

// Changes by writers that publish nothing (the juicefs CLI on the same
// volume) reach a trusting node through Redis key tracking: Redis reports
// every change of JuiceFS's inode and directory keys to the node's
// subscription, in order with the stream's own messages, at most once (a
// connection lost loses reports, which ends trust).

import (
	"context"
	"errors"
	"fmt"
	"strconv"
)

// trackingChannel is where Redis sends the keys it tracks (RESP2 redirect).
const trackingChannel = "__redis__:invalidate"

// trackedChange turns keys Redis reports changed into a change: JuiceFS's
// i<ino> (attributes; every write rewrites them) and d<ino> (a directory's
// entries), pkg/meta/redis.go. Other keys with those first letters are not
// numbered and are left out.
func trackedChange(keys []string) Change {
	var c Change
	for _, k := range keys {
		if len(k) < 2 {
			continue
		}
		ino, err := strconv.ParseUint(k[1:], 10, 64)
		if err != nil {
			continue
		}
		switch k[0] {
		case 'i':
			c.Attrs = append(c.Attrs, ino)
		case 'd':
			c.Dirs = append(c.Dirs, ino)
		}
	}
	return c
}

// checkTracking makes sure Redis reports every change of JuiceFS's inode and
// directory keys to the subscription (changes by writers that do not publish
// theirs, the juicefs CLI). Key tracking is a property of one connection, so
// it runs on a connection of its own; a connection that was replaced or a
// redirect that no longer names the subscription may have lost reports,
// which ends trust before tracking is turned on again.
func (s *Shared) checkTracking(ctx context.Context) error {
	if !s.cfg.Trust {
		return nil
	}
	sub := s.subID.Load()
	if s.track != nil {
		info, err := s.track.Do(ctx, "CLIENT", "TRACKINGINFO").Result()
		if err == nil && trackingOK(info, sub) {
			return nil
		}
		_ = s.track.Close()
		s.track = nil
		if err == nil {
			err = fmt.Errorf("key tracking not redirected to the subscription (%v)", info)
		}
		s.mu.Lock()
		s.lapseLocked("key tracking: " + err.Error())
		s.mu.Unlock()
	}
	if sub == 0 {
		return errors.New("key tracking: the subscription has no connection yet")
	}
	c := s.client.Conn()
	if err := c.Do(ctx, "CLIENT", "TRACKING", "ON", "REDIRECT", sub, "BCAST", "PREFIX", "i", "PREFIX", "d").Err(); err != nil {
		_ = c.Close()
		return fmt.Errorf("turning key tracking on (Redis 6 or later): %w", err)
	}
	s.track = c
	return nil
}

// trackingOK reads CLIENT TRACKINGINFO: on, in broadcast mode, redirected
// to the subscription's connection.
func trackingOK(info any, sub int64) bool {
	var flags []any
	var redirect int64 = -1
	put := func(k string, v any) {
		switch k {
		case "flags":
			flags, _ = v.([]any)
		case "redirect":
			redirect, _ = v.(int64)
		}
	}
	switch m := info.(type) {
	case map[any]any: // RESP3
		for k, v := range m {
			put(fmt.Sprint(k), v)
		}
	case []any: // RESP2: key, value, ...
		for i := 0; i+1 < len(m); i += 2 {
			put(fmt.Sprint(m[i]), m[i+1])
		}
	}
	on, bcast := false, false
	for _, f := range flags {
		switch fmt.Sprint(f) {
		case "on":
			on = true
		case "bcast":
			bcast = true
		case "broken_redirect":
			return false
		}
	}
	return on && bcast && redirect == sub
}
