package prealloc

// Abandon stops the manager the way a killed process does: background work
// ends, the journal is closed, nothing is drained or released.
func (m *Manager) Abandon() {
	m.mu.Lock()
	m.closing = true
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
	_ = m.j.close()
}
