package prealloc

import "time"

// Negative lookups. Before every create the kernel looks the name up, which
// costs a metadata round trip that would dwarf a create from the pool. With
// NegativeTTL set, the names of every enabled directory are listed in the
// background, and a name missing from a listing younger than NegativeTTL is
// answered "no such file" without asking the metadata engine: the same
// staleness as the kernel's entry cache, for names other nodes create.

type dirNames struct {
	names map[string]struct{}
	at    time.Time // when the listing started
}

// Absent reports that name is known not to exist in parent (an enabled
// directory) as of a listing younger than NegativeTTL.
func (m *Manager) Absent(parent uint64, name string) bool {
	if m.opts.NegativeTTL <= 0 {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.names[parent]
	if d == nil || time.Since(d.at) >= m.opts.NegativeTTL {
		return false
	}
	if _, ok := d.names[name]; ok {
		return false
	}
	return m.byName[nameKey{parent, name}] == nil
}

// noteName records a name this mount is creating in an enabled directory.
// The note outlives listings that started before it, so a listing that raced
// with the create cannot hide the name. Called with m.mu held.
func (m *Manager) noteName(parent uint64, name string) {
	if m.opts.NegativeTTL <= 0 {
		return
	}
	if d := m.names[parent]; d != nil {
		d.names[name] = struct{}{}
	}
	if m.notes[parent] == nil {
		m.notes[parent] = map[string]time.Time{}
	}
	m.notes[parent][name] = time.Now()
}

// NoteName records a name this mount is about to create in parent outside
// the pool (mkdir, link, rename, a normal create), before the request runs.
func (m *Manager) NoteName(parent uint64, name string) {
	if m.opts.NegativeTTL <= 0 || !m.Enabled(parent) {
		return
	}
	m.mu.Lock()
	m.noteName(parent, name)
	m.mu.Unlock()
}

func (m *Manager) namesLoop() {
	defer m.wg.Done()
	every := m.opts.NegativeTTL / 2
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		for dir := range m.opts.Dirs {
			start := time.Now()
			list, st := m.vol.ReadDir(m.ctx, dir)
			if st != 0 {
				m.mu.Lock()
				delete(m.names, dir)
				m.mu.Unlock()
				continue
			}
			set := make(map[string]struct{}, len(list))
			for _, e := range list {
				set[e.Name] = struct{}{}
			}
			m.mu.Lock()
			// Names this mount is creating are kept until a listing that
			// started after the note shows them (or a minute passed).
			for n, at := range m.notes[dir] {
				_, listed := set[n]
				if listed && at.Before(start) || time.Since(at) > time.Minute {
					delete(m.notes[dir], n)
					continue
				}
				set[n] = struct{}{}
			}
			m.names[dir] = &dirNames{names: set, at: start}
			m.mu.Unlock()
		}
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
	}
}
