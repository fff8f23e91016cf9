package prealloc

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// The journal is a bbolt file in the daemon's state directory. It holds this
// node's identity, the pool files it owns, and every handed-out file whose
// rename has not landed yet.
var (
	bucketMeta    = []byte("meta")
	bucketPool    = []byte("pool")
	bucketPending = []byte("pending")
	keyNode       = []byte("node")
	keyVersion    = []byte("version")
)

const journalVersion = "1"

// PoolFile is a pre-created, unused file in a pool directory.
type PoolFile struct {
	Ino  uint64 `json:"ino"`
	Dir  uint64 `json:"dir"`  // the enabled directory the pool serves
	Name string `json:"name"` // name in the pool directory
}

// Record maps a handed-out pool file to the name it was created under.
type Record struct {
	Ino      uint64    `json:"ino"`
	Dir      uint64    `json:"dir"`       // the enabled directory whose pool it came from
	PoolName string    `json:"pool_name"` // name in the pool directory
	Parent   uint64    `json:"parent"`    // real parent
	Name     string    `json:"name"`      // real name
	Mode     uint32    `json:"mode"`      // permission bits asked for by create
	Uid      uint32    `json:"uid"`
	Gid      uint32    `json:"gid"`
	Created  time.Time `json:"created"`
}

// CorruptError says the journal cannot be trusted; nothing was changed.
type CorruptError struct {
	Path string
	Err  error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("the pre-allocation journal %s is unreadable (%v): pre-allocation refuses to guess, nothing was deleted; "+
		"move the file away to start with an empty journal (files of unfinished creates stay in the volume's /%s directory)", e.Path, e.Err, HiddenDir)
}

func (e *CorruptError) Unwrap() error { return e.Err }

type journalReq struct {
	fn   func(tx *bolt.Tx) error
	done chan error
}

// journal wraps bbolt with group commit: updates queued while a transaction
// commits share the next one, so concurrent creates share one fsync while a
// lone create pays exactly one, with no added delay.
type journal struct {
	path string
	db   *bolt.DB
	reqs chan journalReq
	lazy chan func(tx *bolt.Tx) error
	stop chan struct{}
	done chan struct{}
	node string
}

func openJournal(path string, noSync bool) (*journal, error) {
	_, statErr := os.Stat(path)
	existed := statErr == nil
	if existed {
		// bbolt panics on some corruptions and then leaks its locked file:
		// validate a copy first, so the real file is only opened when sound.
		if err := validateCopy(path); err != nil {
			return nil, &CorruptError{Path: path, Err: err}
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, NoSync: noSync})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("the pre-allocation journal %s is locked by another process", path)
		}
		if existed {
			return nil, &CorruptError{Path: path, Err: err}
		}
		return nil, fmt.Errorf("create the pre-allocation journal %s: %w", path, err)
	}
	j := &journal{path: path, db: db, reqs: make(chan journalReq, 1024), lazy: make(chan func(tx *bolt.Tx) error, 1<<14), stop: make(chan struct{}), done: make(chan struct{})}
	if existed {
		if err := j.check(); err != nil {
			_ = db.Close()
			return nil, &CorruptError{Path: path, Err: err}
		}
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketPool, bucketPending, bucketCloses} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		m := tx.Bucket(bucketMeta)
		if v := m.Get(keyVersion); v != nil && string(v) != journalVersion {
			return fmt.Errorf("journal version %q, this build reads %q", v, journalVersion)
		}
		if err := m.Put(keyVersion, []byte(journalVersion)); err != nil {
			return err
		}
		if n := m.Get(keyNode); n != nil {
			j.node = string(n)
			return nil
		}
		j.node = uuid.NewString()[:8]
		return m.Put(keyNode, []byte(j.node))
	})
	if err != nil {
		_ = db.Close()
		if existed {
			return nil, &CorruptError{Path: path, Err: err}
		}
		return nil, fmt.Errorf("initialize the pre-allocation journal %s: %w", path, err)
	}
	go j.commitLoop()
	return j, nil
}

func validateCopy(path string) (err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".check-*.db")
	if err != nil {
		return fmt.Errorf("copy for checking: %w", err)
	}
	name := tmp.Name()
	defer os.Remove(name)
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("copy for checking: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("copy for checking: %w", err)
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	db, err := bolt.Open(name, 0o600, &bolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		return err
	}
	defer db.Close()
	return (&journal{db: db}).check()
}

// check verifies the page structure and that every record decodes.
func (j *journal) check() error {
	return j.db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		if m := tx.Bucket(bucketMeta); m != nil {
			if n := m.Get(keyNode); n != nil && len(n) != 8 {
				return fmt.Errorf("bad node id %q", n)
			}
		}
		for _, name := range [][]byte{bucketPool, bucketPending} {
			b := tx.Bucket(name)
			if b == nil {
				continue
			}
			err := b.ForEach(func(k, v []byte) error {
				if len(k) != 8 {
					return fmt.Errorf("bucket %s: bad key %x", name, k)
				}
				var r Record
				if err := json.Unmarshal(v, &r); err != nil {
					return fmt.Errorf("bucket %s: record %d: %w", name, binary.BigEndian.Uint64(k), err)
				}
				if r.Ino != binary.BigEndian.Uint64(k) {
					return fmt.Errorf("bucket %s: record %d names inode %d", name, binary.BigEndian.Uint64(k), r.Ino)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return checkCloses(tx)
	})
}

// lazyDelay is how long background updates (pool files added, renames
// landed) may wait for a create's commit to carry them; losing them in a
// crash is harmless (the replay finds the truth in the volume).
const lazyDelay = 50 * time.Millisecond

func (j *journal) commitLoop() {
	defer close(j.done)
	var lazy []func(tx *bolt.Tx) error
	var timer <-chan time.Time
	commitLazy := func() {
		if len(lazy) == 0 {
			return
		}
		fns := lazy
		lazy = nil
		_ = j.db.Update(func(tx *bolt.Tx) error {
			for _, fn := range fns {
				if err := fn(tx); err != nil {
					return err
				}
			}
			return nil
		})
	}
	for {
		var batch []journalReq
		select {
		case r := <-j.reqs:
			batch = append(batch, r)
		case fn := <-j.lazy:
			lazy = append(lazy, fn)
			if timer == nil {
				timer = time.After(lazyDelay)
			}
			continue
		case <-timer:
			timer = nil
			commitLazy()
			continue
		case <-j.stop:
		drain:
			for {
				select {
				case fn := <-j.lazy:
					lazy = append(lazy, fn)
				default:
					break drain
				}
			}
			commitLazy()
			return
		}
	more:
		for len(batch) < 4096 {
			select {
			case r := <-j.reqs:
				batch = append(batch, r)
			default:
				break more
			}
		}
	drainLazy:
		for {
			select {
			case fn := <-j.lazy:
				lazy = append(lazy, fn)
			default:
				break drainLazy
			}
		}
		// Background updates queued before these requests ride along, first.
		fns := lazy
		lazy, timer = nil, nil
		err := j.db.Update(func(tx *bolt.Tx) error {
			for _, fn := range fns {
				if err := fn(tx); err != nil {
					return err
				}
			}
			for _, r := range batch {
				if err := r.fn(tx); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil && len(batch)+len(fns) > 1 {
			// One bad update must not fail its neighbours: retry them alone.
			for _, fn := range fns {
				_ = j.db.Update(fn)
			}
			for _, r := range batch {
				r.done <- j.db.Update(r.fn)
			}
			continue
		}
		for _, r := range batch {
			r.done <- err
		}
	}
}

// update runs fn in the next group commit and returns once it is durable.
func (j *journal) update(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	r := journalReq{fn: fn, done: make(chan error, 1)}
	select {
	case j.reqs <- r:
	case <-j.stop:
		return errors.New("pre-allocation journal closed")
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.done:
		return err
	case <-j.done:
		return errors.New("pre-allocation journal closed")
	}
}

// later queues a background update: it is committed with the next create
// or within lazyDelay, and nobody waits for it.
func (j *journal) later(fn func(tx *bolt.Tx) error) {
	select {
	case j.lazy <- fn:
	case <-j.stop:
	}
}

func (j *journal) close() error {
	close(j.stop)
	<-j.done
	// Requests still queued are answered with an error by update.
	return j.db.Close()
}

func key(ino uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], ino)
	return k[:]
}

func putJSON(tx *bolt.Tx, bucket []byte, ino uint64, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put(key(ino), data)
}

// load returns the pool files and pending records.
func (j *journal) load() (pool []PoolFile, pending []Record, err error) {
	err = j.db.View(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketPool).ForEach(func(_, v []byte) error {
			var p PoolFile
			if err := json.Unmarshal(v, &p); err != nil {
				return err
			}
			pool = append(pool, p)
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketPending).ForEach(func(_, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			pending = append(pending, r)
			return nil
		})
	})
	if err != nil {
		err = &CorruptError{Path: j.path, Err: err}
	}
	return pool, pending, err
}
