// Package neo4jstore is the graph.Store on a Neo4j 5 server (Bolt), for
// several nodes sharing one tag graph.
//
// Model, every node scoped by a volume key:
//
//	(:File {key: "<vol>/<id>", vol, id, name, parent, tagged})   key unique
//	(:Tag  {key: "<vol>/<name>", vol, name})             key unique
//	(:File)-[:TAGGED]->(:Tag)
//	(:File)-[:CO {w, at}]->(:File)   co-access, one edge each direction; at in Unix ns
//
// The unique key is a single property because composite uniqueness
// constraints are not understood by every Bolt server (NornicDB rejects
// them); tag names hold no '/', so "<vol>/<name>" is unambiguous. File.tagged
// marks the files in the tag index (a file may also exist only for its
// co-access edges); File.parent is the inode of its directory, 0 or missing
// when unknown (nodes written before it was kept).
//
// The Cypher is deliberately plain (flat UNWIND ... MERGE batches, simple
// MATCH ... RETURN reads); set logic, ranking and arithmetic happen in Go.
// Several Bolt servers get fancier Cypher silently wrong: see
// shapes_test.go, which checks every statement used here against the server.
//
// Writes that read before they write (Update, AddCoAccess, DeleteTag) first
// set a property on the nodes they change: Neo4j then holds those nodes'
// write locks until commit, so concurrent writers to one file serialize
// instead of losing updates. Missing file and tag nodes are created in a
// short transaction of its own before the one that reads and changes them
// (NornicDB loses writes to nodes created earlier in the same transaction),
// and one process runs its write transactions one at a time.
//
// Update is one transaction, as graph.Store requires; NornicDB (on Badger)
// refuses transactions past roughly 10,000 written entries ("Txn is too big
// to fit into one request"), so callers should batch about 100 files of 20
// tags per Update there. Forget deletes in transactions of 200 files.
package neo4jstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/neo4j/neo4j-go-driver/v5/neo4j"
	"github.com/neo4j/neo4j-go-driver/v5/neo4j/config"

	"github.com/disgrafs/disgrafs/graph"
	"github.com/disgrafs/disgrafs/graph/internal/logic"
)

var debugQueries = os.Getenv("DISGRAFS_DEBUG_CYPHER") != ""

// ErrAuth is wrapped by errors caused by wrong credentials.
var ErrAuth = errors.New("authentication failed")

// Options tune a Store. The zero value gives the defaults.
type Options struct {
	// Timeout bounds every call, retries included, unless the caller's
	// context ends sooner (default 30s).
	Timeout time.Duration
	// ConnectTimeout bounds opening one connection (default 5s).
	ConnectTimeout time.Duration
	// Database is the database to use (default: the server's default).
	Database string
	// BatchRows is the most rows sent in one UNWIND statement (default 1000).
	BatchRows int
	// MaxConnections is the size of the connection pool (default 50).
	MaxConnections int
}

// Store is a graph.Store on a Neo4j server, safe for concurrent use.
type Store struct {
	driver neo4j.DriverWithContext
	vol    string
	opts   Options
	closed atomic.Bool
	// writeSem runs this process's write transactions one at a time, as
	// bbolt does: concurrent transactions on shared nodes (a popular tag, a
	// file tagged from two places) would only conflict and back off. Other
	// processes sharing the graph are covered by the transactions' node
	// locks (Neo4j) or conflict detection and retries (NornicDB).
	writeSem chan struct{}
}

var _ graph.Store = (*Store)(nil)

// Statements creating the schema; each runs on its own (schema changes may
// not share a transaction with data).
var schema = []string{
	"CREATE CONSTRAINT disgrafs_file_key IF NOT EXISTS FOR (f:File) REQUIRE f.key IS UNIQUE",
	"CREATE CONSTRAINT disgrafs_tag_key IF NOT EXISTS FOR (t:Tag) REQUIRE t.key IS UNIQUE",
	"CREATE INDEX disgrafs_file_vol IF NOT EXISTS FOR (f:File) ON (f.vol)",
	"CREATE INDEX disgrafs_tag_vol IF NOT EXISTS FOR (t:Tag) ON (t.vol)",
}

// extraSchema are indexes Neo4j already has (a uniqueness constraint is
// backed by an index; IF NOT EXISTS then makes these no-ops) but NornicDB
// needs: its MATCH does not use a constraint's index (a lookup by key scans
// every node of the label, 100-300 ms at 10,000 nodes, against 1 ms with
// these). Failing to create them is not an error.
var extraSchema = []string{
	"CREATE INDEX disgrafs_file_key_lookup IF NOT EXISTS FOR (f:File) ON (f.key)",
	"CREATE INDEX disgrafs_tag_key_lookup IF NOT EXISTS FOR (t:Tag) ON (t.key)",
}

// Open connects to url (neo4j://, bolt://, or their +s/+ssc TLS forms) as
// user, creates the constraints and indexes if missing, and returns the store
// of volume. Connection failures wrap graph.ErrUnavailable, wrong credentials
// ErrAuth.
func Open(ctx context.Context, url, user, password, volume string, opts Options) (*Store, error) {
	if volume == "" {
		return nil, errors.New("neo4jstore: empty volume key")
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 5 * time.Second
	}
	if opts.BatchRows <= 0 {
		opts.BatchRows = 1000
	}
	if opts.MaxConnections <= 0 {
		opts.MaxConnections = 50
	}
	driver, err := neo4j.NewDriverWithContext(url, neo4j.BasicAuth(user, password, ""), func(c *config.Config) {
		c.SocketConnectTimeout = opts.ConnectTimeout
		c.ConnectionAcquisitionTimeout = opts.Timeout
		c.MaxTransactionRetryTime = opts.Timeout
		c.MaxConnectionPoolSize = opts.MaxConnections
		c.SocketKeepalive = true
	})
	if err != nil {
		return nil, fmt.Errorf("neo4jstore: open %s: %w", url, err)
	}
	s := &Store{driver: driver, vol: volume, opts: opts, writeSem: make(chan struct{}, 1)}
	cctx, cancel := context.WithTimeout(ctx, opts.ConnectTimeout+time.Second)
	defer cancel()
	if err := driver.VerifyConnectivity(cctx); err != nil {
		driver.Close(context.Background())
		return nil, classify("open "+url, err)
	}
	if err := s.ensureSchema(ctx); err != nil {
		driver.Close(context.Background())
		return nil, err
	}
	return s, nil
}

func (s *Store) ensureSchema(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	sess := s.session(ctx, neo4j.AccessModeWrite)
	defer sess.Close(context.Background())
	run := func(q string) error {
		res, err := sess.Run(ctx, q, nil)
		if err == nil {
			_, err = res.Consume(ctx)
		}
		return err
	}
	for _, q := range schema {
		if err := run(q); err != nil {
			return classify("create schema ("+q+")", err)
		}
	}
	for _, q := range extraSchema {
		var nerr *neo4j.Neo4jError
		if err := run(q); err != nil && !errors.As(err, &nerr) {
			return classify("create schema ("+q+")", err)
		}
	}
	return nil
}

// Close releases the driver's connections.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if err := s.driver.Close(context.Background()); err != nil {
		return fmt.Errorf("neo4jstore: close: %w", err)
	}
	return nil
}

// Volume is the volume key the store is scoped to.
func (s *Store) Volume() string { return s.vol }

func (s *Store) session(ctx context.Context, mode neo4j.AccessMode) neo4j.SessionWithContext {
	return s.driver.NewSession(ctx, neo4j.SessionConfig{AccessMode: mode, DatabaseName: s.opts.Database})
}

// tx is one transaction's view for the methods: run a statement, collect
// the records.
type tx struct {
	ctx context.Context
	t   neo4j.ManagedTransaction
	s   *Store
}

func (t *tx) query(q string, params map[string]any) ([]*neo4j.Record, error) {
	if params == nil {
		params = map[string]any{}
	}
	params["vol"] = t.s.vol
	start := time.Now()
	res, err := t.t.Run(t.ctx, q, params)
	if err != nil {
		return nil, err
	}
	recs, err := res.Collect(t.ctx)
	if debugQueries {
		fmt.Printf("%8.1fms %4d rows  %.90s\n", float64(time.Since(start).Microseconds())/1000, len(recs), q)
	}
	return recs, err
}

// exec runs a statement over rows, BatchRows at a time.
func exec[R any](t *tx, q string, rows []R) error {
	return each(t, q, rows, nil)
}

// each runs a statement over rows, BatchRows at a time, handing each record
// to fn.
func each[R any](t *tx, q string, rows []R, fn func(*neo4j.Record) error) error {
	for len(rows) > 0 {
		n := min(len(rows), t.s.opts.BatchRows)
		recs, err := t.query(q, map[string]any{"rows": anySlice(rows[:n])})
		if err != nil {
			return err
		}
		if fn != nil {
			for _, r := range recs {
				if err := fn(r); err != nil {
					return err
				}
			}
		}
		rows = rows[n:]
	}
	return nil
}

func anySlice[R any](rows []R) []any {
	out := make([]any, len(rows))
	for i, r := range rows {
		out[i] = r
	}
	return out
}

func (s *Store) run(ctx context.Context, op string, write bool, fn func(*tx) error) error {
	if s.closed.Load() {
		return fmt.Errorf("neo4jstore: %s: store is closed: %w", op, graph.ErrUnavailable)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("neo4jstore: %s: %w", op, err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	mode := neo4j.AccessModeRead
	if write {
		mode = neo4j.AccessModeWrite
		select {
		case s.writeSem <- struct{}{}:
			defer func() { <-s.writeSem }()
		case <-ctx.Done():
			return classify(op+" (waiting for this process's other writes)", ctx.Err())
		}
	}
	sess := s.session(ctx, mode)
	defer sess.Close(context.Background())
	work := func(t neo4j.ManagedTransaction) (any, error) { return nil, fn(&tx{ctx: ctx, t: t, s: s}) }
	var err error
	if write {
		_, err = sess.ExecuteWrite(ctx, work)
	} else {
		_, err = sess.ExecuteRead(ctx, work)
	}
	return classify(op, err)
}

// classify wraps err: our own sentinel errors pass through; wrong
// credentials wrap ErrAuth; anything saying the server cannot be reached or
// did not answer in time wraps graph.ErrUnavailable.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, graph.ErrNoTag) || errors.Is(err, graph.ErrNotEmpty) || errors.Is(err, graph.ErrBadTag) {
		return fmt.Errorf("neo4jstore: %s: %w", op, err)
	}
	var nerr *neo4j.Neo4jError
	if errors.As(err, &nerr) {
		switch {
		case nerr.IsAuthenticationFailed() || nerr.Code == "Neo.ClientError.Security.Unauthorized":
			return fmt.Errorf("neo4jstore: %s: %w (wrong user or password): %v", op, ErrAuth, nerr.Msg)
		case nerr.Classification() == "TransientError":
			return fmt.Errorf("neo4jstore: %s: %w: %w", op, graph.ErrUnavailable, err)
		}
		return fmt.Errorf("neo4jstore: %s: %w", op, err)
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("neo4jstore: %s: %w", op, err)
	}
	var (
		cerr  *neo4j.ConnectivityError
		terr  *neo4j.TransactionExecutionLimit
		uerr  *neo4j.UsageError
		operr *net.OpError
	)
	switch {
	case errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &cerr), errors.As(err, &terr), errors.As(err, &operr),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return fmt.Errorf("neo4jstore: %s: %w: %w", op, graph.ErrUnavailable, err)
	case errors.As(err, &uerr):
		return fmt.Errorf("neo4jstore: %s: %w", op, err)
	}
	var nte net.Error
	if errors.As(err, &nte) && nte.Timeout() {
		return fmt.Errorf("neo4jstore: %s: %w: %w", op, graph.ErrUnavailable, err)
	}
	return fmt.Errorf("neo4jstore: %s: %w", op, err)
}

// Keys and values.

func (s *Store) fileKey(id graph.FileID) string {
	return s.vol + "/" + strconv.FormatUint(uint64(id), 10)
}

func (s *Store) tagKey(name string) string { return s.vol + "/" + name }

func (s *Store) tagKeys(names []string) []any {
	out := make([]any, len(names))
	for i, n := range names {
		out[i] = s.tagKey(n)
	}
	return out
}

// dbID stores a FileID (an inode number) as a Cypher integer (int64).
func dbID(id graph.FileID) int64 { return int64(id) }

func getString(r *neo4j.Record, key string) string {
	v, _ := r.Get(key)
	s, _ := v.(string)
	return s
}

func getInt(r *neo4j.Record, key string) (int64, error) {
	v, _ := r.Get(key)
	switch x := v.(type) {
	case int64:
		return x, nil
	case int:
		return int64(x), nil
	case float64:
		if x == float64(int64(x)) {
			return int64(x), nil
		}
	}
	return 0, fmt.Errorf("column %s: %v (%T) is not an integer", key, v, v)
}

func getFloat(r *neo4j.Record, key string) (float64, error) {
	v, _ := r.Get(key)
	switch x := v.(type) {
	case float64:
		return x, nil
	case int64:
		return float64(x), nil
	}
	return 0, fmt.Errorf("column %s: %v (%T) is not a number", key, v, v)
}

// getParent reads a parent inode, 0 when the node has none (written before
// parents were kept) or it is not an integer.
func getParent(r *neo4j.Record, key string) graph.FileID {
	p, err := getInt(r, key)
	if err != nil || p < 0 {
		return 0
	}
	return graph.FileID(p)
}

func getID(r *neo4j.Record, key string) (graph.FileID, error) {
	v, err := getInt(r, key)
	return graph.FileID(v), err
}

// Ping runs a trivial query.
func (s *Store) Ping(ctx context.Context) error {
	return s.run(ctx, "ping", false, func(t *tx) error {
		_, err := t.query("RETURN 1 AS one", nil)
		return err
	})
}

// Statements. Each is checked against the server by shapes_test.go. Known
// traps on NornicDB v1.2.0 (all silent): "MATCH (f ...) MATCH (t ...) MERGE
// (f)-[:R]->(t)" creates no edge when f or t was created earlier in the same
// transaction (the comma form "MATCH (f ...), (t ...)" works); a second MERGE
// on a node created earlier in the transaction fails on the unique constraint
// (so each node is MERGEd once per transaction, then MATCHed); arithmetic or
// coalesce()/CASE in SET stores the expression's text; count(DISTINCT x) over
// a pattern overcounts; a RETURN alias equal to an UNWIND variable renames
// the column. Patterns start from the node the lookup is by: NornicDB
// expands them left to right (MATCH (f:File)-[:TAGGED]->(t:Tag {key: $k})
// scans every file; MATCH (t:Tag {key: $k})<-[:TAGGED]-(f:File) does not).
const (
	qEnsureFiles   = "UNWIND $rows AS row MERGE (f:File {key: row.key}) SET f.vol = $vol, f.id = row.id"
	qLockFiles     = "UNWIND $rows AS k MATCH (f:File {key: k}) SET f.vol = $vol RETURN f.key AS fkey"
	qFileState     = "UNWIND $rows AS k MATCH (f:File {key: k}) RETURN f.key AS fkey, f.name AS fname, f.parent AS fparent"
	qFileTags      = "UNWIND $rows AS k MATCH (f:File {key: k})-[:TAGGED]->(t:Tag) RETURN f.key AS fkey, t.name AS tname"
	qMergeTags     = "UNWIND $rows AS row MERGE (t:Tag {key: row.key}) SET t.vol = $vol, t.name = row.name"
	qAddTagged     = "UNWIND $rows AS row MATCH (f:File {key: row.f}), (t:Tag {key: row.t}) MERGE (f)-[:TAGGED]->(t) RETURN f.key AS fkey"
	qDelTagged     = "UNWIND $rows AS row MATCH (f:File {key: row.f})-[r:TAGGED]->(t:Tag {key: row.t}) DELETE r"
	qSetFiles      = "UNWIND $rows AS row MATCH (f:File {key: row.key}) SET f.name = row.name, f.parent = row.parent, f.tagged = row.tagged"
	qFilesWithCo   = "UNWIND $rows AS k MATCH (f:File {key: k})-[:CO]->(g:File) RETURN f.key AS fkey"
	qDeleteFiles   = "UNWIND $rows AS k MATCH (f:File {key: k}) DETACH DELETE f"
	qTagNames      = "MATCH (t:Tag {vol: $vol}) RETURN t.name AS tname"
	qTagCounts     = "MATCH (t:Tag {vol: $vol})<-[:TAGGED]-(f:File) RETURN t.name AS tname, count(f) AS n"
	qTagsOf        = "MATCH (f:File {key: $key})-[:TAGGED]->(t:Tag) RETURN t.name AS tname"
	qTagsExist     = "UNWIND $rows AS k MATCH (t:Tag {key: k}) RETURN t.name AS tname"
	qPostings      = "UNWIND $rows AS k MATCH (t:Tag {key: k})<-[:TAGGED]-(f:File) RETURN f.id AS fid, f.name AS fname, t.name AS tname"
	qTagDF         = "UNWIND $rows AS k MATCH (t:Tag {key: k})<-[:TAGGED]-(f:File) RETURN t.name AS tname, count(f) AS n"
	qMembers       = "MATCH (t:Tag {key: $key})<-[:TAGGED]-(f:File) RETURN f.id AS fid"
	qHasTag        = "UNWIND $rows AS k MATCH (f:File {key: k})-[:TAGGED]->(t:Tag {key: $tkey}) RETURN f.id AS fid"
	qTaggedFiles   = "MATCH (f:File {vol: $vol, tagged: true}) RETURN f.id AS fid, f.name AS fname"
	qCountTagged   = "MATCH (f:File {vol: $vol, tagged: true}) RETURN count(f) AS n"
	qNames         = "UNWIND $rows AS k MATCH (f:File {key: k}) RETURN f.id AS fid, f.name AS fname, f.parent AS fparent, f.tagged AS tagged"
	qLockTag       = "MATCH (t:Tag {key: $key}) SET t.vol = $vol RETURN t.name AS tname"
	qCountTag      = "MATCH (t:Tag {key: $key})<-[:TAGGED]-(f:File) RETURN count(f) AS n"
	qDeleteTag     = "MATCH (t:Tag {key: $key}) DETACH DELETE t"
	qCreateTag     = "MERGE (t:Tag {key: $key}) SET t.vol = $vol, t.name = $name"
	qCoEdges       = "UNWIND $rows AS p MATCH (a:File {key: p.a})-[r:CO]->(b:File {key: p.b}) RETURN a.key AS akey, b.key AS bkey, r.w AS w, r.at AS at"
	qSetCo         = "UNWIND $rows AS row MATCH (a:File {key: row.a}), (b:File {key: row.b}) MERGE (a)-[r:CO]->(b) SET r.w = row.w, r.at = row.at"
	qCoOf          = "MATCH (a:File {key: $key})-[r:CO]->(b:File) RETURN b.id AS bid, b.name AS bname, b.parent AS bparent, b.tagged AS tagged, r.w AS w, r.at AS at"
	qVolFileKeys   = "MATCH (f:File {vol: $vol}) RETURN f.key AS k"
	qVolTagKeys    = "MATCH (t:Tag {vol: $vol}) RETURN t.key AS k"
	qDeleteTagKeys = "UNWIND $rows AS k MATCH (t:Tag {key: k}) DETACH DELETE t"
)

type fileRow struct {
	key    string
	id     int64
	name   string
	parent int64
	tags   map[string]bool
}

// Update applies changes in one transaction.
func (s *Store) Update(ctx context.Context, changes []graph.Change) error {
	if err := logic.CheckChanges(changes); err != nil {
		return fmt.Errorf("neo4jstore: update: %w", err)
	}
	if len(changes) == 0 {
		return nil
	}
	// The files, in key order so that concurrent writers lock in one order.
	byKey := map[string]*fileRow{}
	for _, ch := range changes {
		k := s.fileKey(ch.File.ID)
		if byKey[k] == nil {
			byKey[k] = &fileRow{key: k, id: dbID(ch.File.ID)}
		}
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	ensure := make([]map[string]any, len(keys))
	for i, k := range keys {
		ensure[i] = map[string]any{"key": k, "id": byKey[k].id}
	}
	// Every added tag exists afterwards, even if a later change of the
	// batch removed it again (as if the changes were applied one by one).
	var tags []map[string]any
	seenTag := map[string]bool{}
	for _, ch := range changes {
		for _, tg := range ch.Add {
			if !seenTag[tg] {
				seenTag[tg] = true
				tags = append(tags, map[string]any{"key": s.tagKey(tg), "name": tg})
			}
		}
	}
	sort.Slice(tags, func(i, j int) bool { return tags[i]["key"].(string) < tags[j]["key"].(string) })
	if err := s.ensureNodes(ctx, "update", ensure, tags); err != nil {
		return err
	}
	return s.run(ctx, "update", true, func(t *tx) error {
		for _, k := range keys {
			byKey[k].name, byKey[k].parent, byKey[k].tags = "", 0, map[string]bool{}
		}
		if err := s.lockFiles(t, keys); err != nil {
			return err
		}
		if err := each(t, qFileState, keys, func(r *neo4j.Record) error {
			if f := byKey[getString(r, "fkey")]; f != nil {
				f.name, f.parent = getString(r, "fname"), int64(getParent(r, "fparent"))
			}
			return nil
		}); err != nil {
			return err
		}
		if err := each(t, qFileTags, keys, func(r *neo4j.Record) error {
			if f := byKey[getString(r, "fkey")]; f != nil {
				f.tags[getString(r, "tname")] = true
			}
			return nil
		}); err != nil {
			return err
		}
		// Apply the changes in Go, in order.
		before := map[string]map[string]bool{}
		for k, f := range byKey {
			before[k] = f.tags
		}
		final := map[string][]string{}
		names := map[string]string{}
		parents := map[string]int64{}
		for k, f := range byKey {
			final[k] = sortedSet(f.tags)
			names[k], parents[k] = f.name, f.parent
		}
		for _, ch := range changes {
			k := s.fileKey(ch.File.ID)
			final[k] = logic.Apply(final[k], ch)
			if len(final[k]) == 0 {
				names[k], parents[k] = "", 0
				continue
			}
			if ch.File.Name != "" {
				names[k] = ch.File.Name
			}
			if ch.File.Parent != 0 {
				parents[k] = dbID(ch.File.Parent)
			}
		}
		var add, del []map[string]any
		var set []map[string]any
		var untagged []string
		for _, k := range keys {
			now := map[string]bool{}
			for _, tg := range final[k] {
				now[tg] = true
				if !before[k][tg] {
					add = append(add, map[string]any{"f": k, "t": s.tagKey(tg)})
				}
			}
			for tg := range before[k] {
				if !now[tg] {
					del = append(del, map[string]any{"f": k, "t": s.tagKey(tg)})
				}
			}
			set = append(set, map[string]any{"key": k, "name": names[k], "parent": parents[k], "tagged": len(now) > 0})
			if len(now) == 0 {
				untagged = append(untagged, k)
			}
		}
		if err := exec(t, qDelTagged, del); err != nil {
			return err
		}
		added := 0
		if err := each(t, qAddTagged, add, func(*neo4j.Record) error { added++; return nil }); err != nil {
			return err
		}
		if added != len(add) {
			return fmt.Errorf("tagged %d of %d: a file or tag was deleted concurrently", added, len(add))
		}
		if err := exec(t, qSetFiles, set); err != nil {
			return err
		}
		return s.dropBare(t, untagged)
	})
}

// ensureNodes creates the missing file and tag nodes, in a transaction of
// its own (see the NornicDB notes above the statements).
func (s *Store) ensureNodes(ctx context.Context, op string, files, tags []map[string]any) error {
	return s.run(ctx, op+" (create nodes)", true, func(t *tx) error {
		if err := exec(t, qEnsureFiles, files); err != nil {
			return err
		}
		return exec(t, qMergeTags, tags)
	})
}

// lockFiles writes to the nodes of keys (sorted) so that the transaction
// holds their locks; every node must exist.
func (s *Store) lockFiles(t *tx, keys []string) error {
	n := 0
	if err := each(t, qLockFiles, keys, func(*neo4j.Record) error { n++; return nil }); err != nil {
		return err
	}
	if n != len(keys) {
		return fmt.Errorf("%d of %d files were deleted concurrently", len(keys)-n, len(keys))
	}
	return nil
}

// dropBare deletes the nodes of untagged files that have no co-access edges
// either (the lock step creates a node for every file it sees).
func (s *Store) dropBare(t *tx, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	hasCo := map[string]bool{}
	if err := each(t, qFilesWithCo, keys, func(r *neo4j.Record) error {
		hasCo[getString(r, "fkey")] = true
		return nil
	}); err != nil {
		return err
	}
	var bare []string
	for _, k := range keys {
		if !hasCo[k] {
			bare = append(bare, k)
		}
	}
	return exec(t, qDeleteFiles, bare)
}

func sortedSet(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Forget deletes files and their edges, in transactions of up to 200 files.
func (s *Store) Forget(ctx context.Context, ids []graph.FileID) error {
	if len(ids) == 0 {
		return nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = s.fileKey(id)
	}
	sort.Strings(keys)
	// Deleting a node deletes its edges too, which adds up: a few hundred
	// files per transaction keep NornicDB (Badger) below its transaction
	// size limit. Forgetting is idempotent, so a failure part way is
	// repaired by forgetting again.
	for len(keys) > 0 {
		chunk := keys[:min(len(keys), deleteChunk)]
		keys = keys[len(chunk):]
		if err := s.run(ctx, "forget", true, func(t *tx) error { return exec(t, qDeleteFiles, chunk) }); err != nil {
			return err
		}
	}
	return nil
}

// deleteChunk is how many nodes one transaction deletes, edges included.
const deleteChunk = 200

// CreateTag makes tag exist.
func (s *Store) CreateTag(ctx context.Context, tag string) error {
	if err := graph.ValidTag(tag); err != nil {
		return fmt.Errorf("neo4jstore: create tag: %w", err)
	}
	return s.run(ctx, "create tag", true, func(t *tx) error {
		_, err := t.query(qCreateTag, map[string]any{"key": s.tagKey(tag), "name": tag})
		return err
	})
}

// DeleteTag removes a tag no file carries.
func (s *Store) DeleteTag(ctx context.Context, tag string) error {
	return s.run(ctx, "delete tag", true, func(t *tx) error {
		key := s.tagKey(tag)
		recs, err := t.query(qLockTag, map[string]any{"key": key})
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			return fmt.Errorf("%q: %w", tag, graph.ErrNoTag)
		}
		recs, err = t.query(qCountTag, map[string]any{"key": key})
		if err != nil {
			return err
		}
		if len(recs) > 0 {
			n, err := getInt(recs[0], "n")
			if err != nil {
				return err
			}
			if n > 0 {
				return fmt.Errorf("%q has %d files: %w", tag, n, graph.ErrNotEmpty)
			}
		}
		_, err = t.query(qDeleteTag, map[string]any{"key": key})
		return err
	})
}

// Tags lists every tag with its file count, by name.
func (s *Store) Tags(ctx context.Context) ([]graph.TagCount, error) {
	var out []graph.TagCount
	err := s.run(ctx, "tags", false, func(t *tx) error {
		out = nil
		names, err := t.query(qTagNames, nil)
		if err != nil {
			return err
		}
		counts, err := t.query(qTagCounts, nil)
		if err != nil {
			return err
		}
		n := map[string]int{}
		for _, r := range counts {
			c, err := getInt(r, "n")
			if err != nil {
				return err
			}
			n[getString(r, "tname")] = int(c)
		}
		for _, r := range names {
			name := getString(r, "tname")
			out = append(out, graph.TagCount{Tag: name, Files: n[name]})
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Tag < out[j].Tag })
		return nil
	})
	return out, err
}

// TagsOf lists a file's tags, sorted.
func (s *Store) TagsOf(ctx context.Context, id graph.FileID) ([]string, error) {
	var out []string
	err := s.run(ctx, "tags of file", false, func(t *tx) error {
		out = nil
		recs, err := t.query(qTagsOf, map[string]any{"key": s.fileKey(id)})
		if err != nil {
			return err
		}
		for _, r := range recs {
			out = append(out, getString(r, "tname"))
		}
		sort.Strings(out)
		return nil
	})
	return out, err
}

// files returns the files carrying every tag, by name then ID.
func (s *Store) files(t *tx, tags []string) ([]graph.File, error) {
	if len(tags) == 0 {
		return nil, errors.New("no tags given")
	}
	want := sortedSet(setOf(tags))
	recs, err := t.query(qTagsExist, map[string]any{"rows": s.tagKeys(want)})
	if err != nil {
		return nil, err
	}
	found := map[string]bool{}
	for _, r := range recs {
		found[getString(r, "tname")] = true
	}
	for _, tg := range want {
		if !found[tg] {
			return nil, fmt.Errorf("%q: %w", tg, graph.ErrNoTag)
		}
	}
	recs, err = t.query(qPostings, map[string]any{"rows": s.tagKeys(want)})
	if err != nil {
		return nil, err
	}
	type acc struct {
		name string
		n    int
	}
	count := map[graph.FileID]*acc{}
	for _, r := range recs {
		id, err := getID(r, "fid")
		if err != nil {
			return nil, err
		}
		a := count[id]
		if a == nil {
			a = &acc{name: getString(r, "fname")}
			count[id] = a
		}
		a.n++
	}
	var out []graph.File
	for id, a := range count {
		if a.n == len(want) {
			out = append(out, graph.File{ID: id, Name: a.name})
		}
	}
	logic.SortFiles(out)
	return out, nil
}

func setOf(ss []string) map[string]bool {
	m := make(map[string]bool, len(ss))
	for _, s := range ss {
		m[s] = true
	}
	return m
}

// Files lists the files carrying every one of tags.
func (s *Store) Files(ctx context.Context, tags []string) ([]graph.File, error) {
	var out []graph.File
	err := s.run(ctx, "files", false, func(t *tx) error {
		var err error
		out, err = s.files(t, tags)
		return err
	})
	return out, err
}

// CoTags lists the tags that narrow Files(tags).
func (s *Store) CoTags(ctx context.Context, tags []string) ([]string, error) {
	var out []string
	err := s.run(ctx, "co-tags", false, func(t *tx) error {
		out = nil
		files, err := s.files(t, tags)
		if err != nil {
			return err
		}
		keys := make([]string, len(files))
		for i, f := range files {
			keys[i] = s.fileKey(f.ID)
		}
		in := setOf(tags)
		counts := map[string]int{}
		if err := each(t, qFileTags, keys, func(r *neo4j.Record) error {
			if tg := getString(r, "tname"); !in[tg] {
				counts[tg]++
			}
			return nil
		}); err != nil {
			return err
		}
		for tg, c := range counts {
			if c < len(files) {
				out = append(out, tg)
			}
		}
		sort.Strings(out)
		return nil
	})
	return out, err
}

// Query lists the files matching e. A tag that does not exist matches no
// file.
func (s *Store) Query(ctx context.Context, e graph.Expr) ([]graph.File, error) {
	m, err := logic.NewMatcher(e)
	if err != nil {
		return nil, fmt.Errorf("neo4jstore: query: %w", err)
	}
	var out []graph.File
	err = s.run(ctx, "query", false, func(t *tx) error {
		out = nil
		type cand struct {
			name string
			bits logic.Bits
		}
		cands := map[graph.FileID]*cand{}
		recs, err := t.query(qPostings, map[string]any{"rows": s.tagKeys(m.Tags)})
		if err != nil {
			return err
		}
		for _, r := range recs {
			id, err := getID(r, "fid")
			if err != nil {
				return err
			}
			c := cands[id]
			if c == nil {
				c = &cand{name: getString(r, "fname")}
				cands[id] = c
			}
			if i := m.Index(getString(r, "tname")); i >= 0 {
				c.bits.Set(i)
			}
		}
		if m.MatchesUntagged {
			recs, err := t.query(qTaggedFiles, nil)
			if err != nil {
				return err
			}
			for _, r := range recs {
				id, err := getID(r, "fid")
				if err != nil {
					return err
				}
				if cands[id] == nil {
					cands[id] = &cand{name: getString(r, "fname")}
				}
			}
		}
		for id, c := range cands {
			if m.Match(&c.bits) {
				out = append(out, graph.File{ID: id, Name: c.name})
			}
		}
		logic.SortFiles(out)
		return nil
	})
	return out, err
}

// Related ranks the files sharing tags with id (sum of log(1+N/df)). It
// reads the rarest tags' members first and stops reading whole tags once the
// rest cannot change the top limit (logic.RankRelated): a tag on every file
// is then only checked against a few candidates.
func (s *Store) Related(ctx context.Context, id graph.FileID, limit int) ([]graph.Scored, error) {
	var out []graph.Scored
	err := s.run(ctx, "related", false, func(t *tx) error {
		out = nil
		recs, err := t.query(qTagsOf, map[string]any{"key": s.fileKey(id)})
		if err != nil || len(recs) == 0 {
			return err
		}
		var names []string
		for _, r := range recs {
			names = append(names, getString(r, "tname"))
		}
		recs, err = t.query(qCountTagged, nil)
		if err != nil {
			return err
		}
		var n int64
		if len(recs) > 0 {
			if n, err = getInt(recs[0], "n"); err != nil {
				return err
			}
		}
		recs, err = t.query(qTagDF, map[string]any{"rows": s.tagKeys(names)})
		if err != nil {
			return err
		}
		var tags []logic.TagDF
		for _, r := range recs {
			df, err := getInt(r, "n")
			if err != nil {
				return err
			}
			tags = append(tags, logic.TagDF{Name: getString(r, "tname"), DF: int(df)})
		}
		ids := func(recs []*neo4j.Record) ([]graph.FileID, error) {
			out := make([]graph.FileID, 0, len(recs))
			for _, r := range recs {
				f, err := getID(r, "fid")
				if err != nil {
					return nil, err
				}
				out = append(out, f)
			}
			return out, nil
		}
		members := func(tag string) ([]graph.FileID, error) {
			recs, err := t.query(qMembers, map[string]any{"key": s.tagKey(tag)})
			if err != nil {
				return nil, err
			}
			return ids(recs)
		}
		having := func(tag string, cands []graph.FileID) ([]graph.FileID, error) {
			var out []graph.FileID
			for len(cands) > 0 {
				chunk := cands[:min(len(cands), s.opts.BatchRows)]
				cands = cands[len(chunk):]
				keys := make([]any, len(chunk))
				for i, c := range chunk {
					keys[i] = s.fileKey(c)
				}
				recs, err := t.query(qHasTag, map[string]any{"rows": keys, "tkey": s.tagKey(tag)})
				if err != nil {
					return nil, err
				}
				got, err := ids(recs)
				if err != nil {
					return nil, err
				}
				out = append(out, got...)
			}
			return out, nil
		}
		out, err = logic.RankRelated(id, int(n), tags, limit, members, having)
		if err != nil {
			return err
		}
		return s.fillNames(t, out)
	})
	return out, err
}

// fillNames sets the names of ranked files that are in the tag index.
func (s *Store) fillNames(t *tx, out []graph.Scored) error {
	if len(out) == 0 {
		return nil
	}
	keys := make([]string, len(out))
	for i, sc := range out {
		keys[i] = s.fileKey(sc.File.ID)
	}
	files := map[graph.FileID]graph.File{}
	if err := each(t, qNames, keys, func(r *neo4j.Record) error {
		id, err := getID(r, "fid")
		if err != nil {
			return err
		}
		if tagged, _ := r.Get("tagged"); tagged == true {
			files[id] = graph.File{ID: id, Name: getString(r, "fname"), Parent: getParent(r, "fparent")}
		}
		return nil
	}); err != nil {
		return err
	}
	for i := range out {
		if f, ok := files[out[i].File.ID]; ok {
			out[i].File = f
		}
	}
	return nil
}

type coPair struct {
	a, b graph.FileID
}

// AddCoAccess adds weight to co-access edges, both directions.
func (s *Store) AddCoAccess(ctx context.Context, edges []graph.CoAccess) error {
	if err := logic.CheckCoAccess(edges); err != nil {
		return fmt.Errorf("neo4jstore: add co-access: %w", err)
	}
	// Sum the batch per pair in Go.
	now := time.Now()
	type agg struct {
		w  float64
		at int64
	}
	sum := map[coPair]*agg{}
	ids := map[graph.FileID]bool{}
	for _, e := range edges {
		if e.A == e.B {
			continue
		}
		at := e.At
		if at.IsZero() {
			at = now
		}
		for _, p := range []coPair{{e.A, e.B}, {e.B, e.A}} {
			a := sum[p]
			if a == nil {
				a = &agg{at: at.UnixNano()}
				sum[p] = a
			}
			a.w += e.Weight
			a.at = max(a.at, at.UnixNano())
		}
		ids[e.A], ids[e.B] = true, true
	}
	if len(sum) == 0 {
		return nil
	}
	var lock []map[string]any
	for id := range ids {
		lock = append(lock, map[string]any{"key": s.fileKey(id), "id": dbID(id)})
	}
	sort.Slice(lock, func(i, j int) bool { return lock[i]["key"].(string) < lock[j]["key"].(string) })
	pairs := make([]coPair, 0, len(sum))
	for p := range sum {
		pairs = append(pairs, p)
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].a != pairs[j].a {
			return pairs[i].a < pairs[j].a
		}
		return pairs[i].b < pairs[j].b
	})
	lockKeys := make([]string, len(lock))
	for i, l := range lock {
		lockKeys[i] = l["key"].(string)
	}
	if err := s.ensureNodes(ctx, "add co-access", lock, nil); err != nil {
		return err
	}
	return s.run(ctx, "add co-access", true, func(t *tx) error {
		if err := s.lockFiles(t, lockKeys); err != nil {
			return err
		}
		q := make([]map[string]any, len(pairs))
		for i, p := range pairs {
			q[i] = map[string]any{"a": s.fileKey(p.a), "b": s.fileKey(p.b)}
		}
		type old struct {
			w  float64
			at int64
		}
		have := map[[2]string]old{}
		if err := each(t, qCoEdges, q, func(r *neo4j.Record) error {
			w, err := getFloat(r, "w")
			if err != nil {
				return err
			}
			at, err := getInt(r, "at")
			if err != nil {
				return err
			}
			have[[2]string{getString(r, "akey"), getString(r, "bkey")}] = old{w, at}
			return nil
		}); err != nil {
			return err
		}
		rows := make([]map[string]any, len(pairs))
		for i, p := range pairs {
			ka, kb := s.fileKey(p.a), s.fileKey(p.b)
			a := sum[p]
			w, at := a.w, a.at
			if o, ok := have[[2]string{ka, kb}]; ok {
				w += o.w
				at = max(at, o.at)
			}
			rows[i] = map[string]any{"a": ka, "b": kb, "w": w, "at": at}
		}
		return exec(t, qSetCo, rows)
	})
}

// CoAccessed ranks the files opened together with id by decayed weight.
func (s *Store) CoAccessed(ctx context.Context, id graph.FileID, limit int, halfLife time.Duration, now time.Time) ([]graph.Scored, error) {
	var out []graph.Scored
	err := s.run(ctx, "co-accessed", false, func(t *tx) error {
		recs, err := t.query(qCoOf, map[string]any{"key": s.fileKey(id)})
		if err != nil {
			return err
		}
		scores := map[graph.FileID]float64{}
		files := map[graph.FileID]graph.File{}
		for _, r := range recs {
			b, err := getID(r, "bid")
			if err != nil {
				return err
			}
			w, err := getFloat(r, "w")
			if err != nil {
				return err
			}
			at, err := getInt(r, "at")
			if err != nil {
				return err
			}
			scores[b] = logic.Decay(w, time.Unix(0, at), now, halfLife)
			if tagged, _ := r.Get("tagged"); tagged == true {
				files[b] = graph.File{ID: b, Name: getString(r, "bname"), Parent: getParent(r, "bparent")}
			}
		}
		out = logic.Top(scores, limit)
		for i := range out {
			if f, ok := files[out[i].File.ID]; ok {
				out[i].File = f
			}
		}
		return nil
	})
	return out, err
}

// DropVolume deletes every node of the store's volume (other volumes in the
// same graph are untouched).
func (s *Store) DropVolume(ctx context.Context) error {
	for _, q := range []struct{ list, del string }{{qVolFileKeys, qDeleteFiles}, {qVolTagKeys, qDeleteTagKeys}} {
		var keys []string
		err := s.run(ctx, "drop volume", false, func(t *tx) error {
			recs, err := t.query(q.list, nil)
			keys = keys[:0]
			for _, r := range recs {
				keys = append(keys, getString(r, "k"))
			}
			return err
		})
		if err != nil {
			return err
		}
		for len(keys) > 0 {
			n := min(len(keys), deleteChunk)
			chunk := keys[:n]
			if err := s.run(ctx, "drop volume", true, func(t *tx) error { return exec(t, q.del, chunk) }); err != nil {
				return err
			}
			keys = keys[n:]
		}
	}
	return nil
}
