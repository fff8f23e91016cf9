#!/usr/bin/env python3
# Generates disgrafs.json, the Grafana dashboard, next to this file:
#   python3 deploy/grafana/gen_dashboard.py
# Edit the panels here rather than the JSON; TestObservability checks that
# every query names a metric the daemon exports and returns data.
import json
SEL='instance=~"$instance",mp=~"$mp"'
R='$__rate_interval'
panels=[]
pid=[0]
y=[0]
def nid():
    pid[0]+=1; return pid[0]
def row(title):
    panels.append({"type":"row","title":title,"id":nid(),"collapsed":False,"gridPos":{"h":1,"w":24,"x":0,"y":y[0]},"panels":[]})
    y[0]+=1
x=[0]
def place(w,h):
    if x[0]+w>24:
        x[0]=0; y[0]+=place.h
        place.h=0
    g={"h":h,"w":w,"x":x[0],"y":y[0]}
    x[0]+=w; place.h=max(place.h,h)
    return g
place.h=0
def endrow():
    if x[0]>0:
        y[0]+=place.h; x[0]=0; place.h=0
def ts(title, targets, unit="short", desc="", stack=False):
    p={"type":"timeseries","title":title,"id":nid(),"datasource":{"type":"prometheus","uid":"${datasource}"},
       "description":desc,"gridPos":place(12,8),
       "fieldConfig":{"defaults":{"unit":unit,"custom":{"fillOpacity":10,"showPoints":"never","stacking":{"mode":"normal" if stack else "none"}}},"overrides":[]},
       "options":{"legend":{"displayMode":"table","placement":"bottom","calcs":["mean","max","lastNotNull"]},"tooltip":{"mode":"multi","sort":"desc"}},
       "targets":[{"refId":chr(65+i),"expr":e,"legendFormat":l,"datasource":{"type":"prometheus","uid":"${datasource}"}} for i,(e,l) in enumerate(targets)]}
    panels.append(p)
def stat(title, expr, unit="short", desc="", thresholds=None):
    p={"type":"stat","title":title,"id":nid(),"datasource":{"type":"prometheus","uid":"${datasource}"},
       "description":desc,"gridPos":place(4,4),
       "fieldConfig":{"defaults":{"unit":unit,"thresholds":thresholds or {"mode":"absolute","steps":[{"color":"green","value":None}]}},"overrides":[]},
       "options":{"reduceOptions":{"calcs":["lastNotNull"],"fields":"","values":False},"colorMode":"value","graphMode":"area","textMode":"auto"},
       "targets":[{"refId":"A","expr":expr,"datasource":{"type":"prometheus","uid":"${datasource}"}}]}
    panels.append(p)

row("Cluster (all selected nodes summed)")
stat("Mounts", f'count(process_start_time_seconds{{{SEL}}})', desc="Daemons reporting (one per mount).")
stat("FUSE ops/s", f'sum(rate(disgrafs_fuse_ops_total{{{SEL}}}[{R}]))', "ops")
stat("Read", f'sum(rate(juicefs_fuse_read_size_bytes_sum{{{SEL}}}[{R}]))', "Bps")
stat("Write", f'sum(rate(juicefs_fuse_written_size_bytes_sum{{{SEL}}}[{R}]))', "Bps")
stat("Graph unavailable", f'count(disgrafs_graph_available{{{SEL}}} == 0) or vector(0)', desc="Mounts whose graph store does not answer.",
     thresholds={"mode":"absolute","steps":[{"color":"green","value":None},{"color":"red","value":1}]})
stat("Tag queue", f'sum(disgrafs_tagger_queue_length{{{SEL}}})', desc="Files waiting for the auto-tagger, all mounts.")
endrow()
stat("File cache hit ratio", f'sum(rate(disgrafs_cache_hit_files_total{{{SEL}}}[{R}])) / (sum(rate(disgrafs_cache_hit_files_total{{{SEL}}}[{R}])) + sum(rate(disgrafs_cache_miss_files_total{{{SEL}}}[{R}])))', "percentunit", desc="Opens served from the whole-file cache, of all opens for reading.")
stat("File cache used", f'sum(disgrafs_cache_bytes{{{SEL}}})', "bytes")
stat("File cache budget", f'sum(disgrafs_cache_budget_bytes{{{SEL}}})', "bytes")
stat("Prefetch used", f'sum(rate(disgrafs_prefetch_used_total{{{SEL}}}[{R}])) / sum(rate(disgrafs_prefetch_done_total{{{SEL}}}[{R}]))', "percentunit", desc="Prefetched files opened afterwards, of files prefetched.")
stat("Warmups running", f'sum(disgrafs_warmup_active{{{SEL}}})')
stat("Cache evictions/s", f'sum(rate(disgrafs_cache_evictions_total{{{SEL}}}[{R}]))', "ops")
endrow()
ts("FUSE ops/s by operation (summed)", [(f'sum by (op) (rate(disgrafs_fuse_ops_total{{{SEL}}}[{R}])) > 0',"{{op}}")], "ops", stack=True)
ts("FUSE latency p99 by operation (all nodes)", [(f'histogram_quantile(0.99, sum by (op, le) (rate(disgrafs_fuse_op_duration_seconds_bucket{{{SEL}}}[{R}])))',"{{op}}")], "s")
ts("Throughput (summed)", [(f'sum(rate(juicefs_fuse_read_size_bytes_sum{{{SEL}}}[{R}]))',"read"),(f'sum(rate(juicefs_fuse_written_size_bytes_sum{{{SEL}}}[{R}]))',"write")], "Bps")
ts("Object storage (summed)", [(f'sum by (method) (rate(juicefs_object_request_data_bytes{{{SEL}}}[{R}]))',"{{method}}")], "Bps")
endrow()

row("FUSE per node")
ts("FUSE ops/s per node", [(f'sum by (instance, mp) (rate(disgrafs_fuse_ops_total{{{SEL}}}[{R}]))',"{{instance}} {{mp}}")], "ops")
ts("FUSE mean latency per node", [(f'sum by (instance, mp) (rate(disgrafs_fuse_op_duration_seconds_sum{{{SEL}}}[{R}])) / sum by (instance, mp) (rate(disgrafs_fuse_op_duration_seconds_count{{{SEL}}}[{R}]))',"{{instance}} {{mp}}")], "s")
ts("Read per node", [(f'sum by (instance, mp) (rate(juicefs_fuse_read_size_bytes_sum{{{SEL}}}[{R}]))',"{{instance}} {{mp}}")], "Bps")
ts("Write per node", [(f'sum by (instance, mp) (rate(juicefs_fuse_written_size_bytes_sum{{{SEL}}}[{R}]))',"{{instance}} {{mp}}")], "Bps")
ts("Read latency p99 per node", [(f'histogram_quantile(0.99, sum by (instance, mp, le) (rate(disgrafs_fuse_op_duration_seconds_bucket{{{SEL},op="read"}}[{R}])))',"{{instance}} {{mp}}")], "s")
ts("Open files per node", [(f'sum by (instance, mp) (juicefs_fuse_open_handlers{{{SEL}}})',"{{instance}} {{mp}}")], "short")
endrow()

row("JuiceFS: metadata, block cache, object storage")
ts("Metadata ops/s per node", [(f'sum by (instance, mp) (rate(juicefs_meta_ops_durations_histogram_seconds_count{{{SEL}}}[{R}]))',"{{instance}} {{mp}}")], "ops")
ts("Metadata latency p99 per node", [(f'histogram_quantile(0.99, sum by (instance, mp, le) (rate(juicefs_meta_ops_durations_histogram_seconds_bucket{{{SEL}}}[{R}])))',"{{instance}} {{mp}}")], "s")
ts("Block cache hit ratio per node (bytes)", [(f'sum by (instance, mp) (rate(juicefs_blockcache_hit_bytes{{{SEL}}}[{R}])) / (sum by (instance, mp) (rate(juicefs_blockcache_hit_bytes{{{SEL}}}[{R}])) + sum by (instance, mp) (rate(juicefs_blockcache_miss_bytes{{{SEL}}}[{R}])))',"{{instance}} {{mp}}")], "percentunit")
ts("Block cache size per node", [(f'sum by (instance, mp) (juicefs_blockcache_bytes{{{SEL}}})',"{{instance}} {{mp}}")], "bytes")
ts("Object requests/s per node", [(f'sum by (instance, mp, method) (rate(juicefs_object_request_durations_histogram_seconds_count{{{SEL}}}[{R}]))',"{{instance}} {{mp}} {{method}}")], "reqps")
ts("Object request errors/s per node", [(f'sum by (instance, mp) (rate(juicefs_object_request_errors{{{SEL}}}[{R}]))',"{{instance}} {{mp}}")], "reqps")
endrow()

row("Whole-file cache")
ts("Cache hits and misses/s per node (opens)", [(f'sum by (instance, mp) (rate(disgrafs_cache_hit_files_total{{{SEL}}}[{R}]))',"{{instance}} {{mp}} hit"),(f'sum by (instance, mp) (rate(disgrafs_cache_miss_files_total{{{SEL}}}[{R}]))',"{{instance}} {{mp}} miss")], "ops")
ts("Cache hit and miss bytes/s (summed)", [(f'sum(rate(disgrafs_cache_hit_bytes_total{{{SEL}}}[{R}]))',"hit"),(f'sum(rate(disgrafs_cache_miss_bytes_total{{{SEL}}}[{R}]))',"miss")], "Bps", desc="Sizes of the files whose opens hit or missed the cache.")
ts("Cache size and budget per node", [(f'sum by (instance, mp) (disgrafs_cache_bytes{{{SEL}}})',"{{instance}} {{mp}} used"),(f'sum by (instance, mp) (disgrafs_cache_budget_bytes{{{SEL}}})',"{{instance}} {{mp}} budget")], "bytes")
ts("Cached files per node", [(f'sum by (instance, mp) (disgrafs_cache_files{{{SEL}}})',"{{instance}} {{mp}}")], "short")
ts("Cache fills and evictions/s per node", [(f'sum by (instance, mp) (rate(disgrafs_cache_filled_files_total{{{SEL}}}[{R}]))',"{{instance}} {{mp}} filled"),(f'sum by (instance, mp) (rate(disgrafs_cache_evictions_total{{{SEL}}}[{R}]))',"{{instance}} {{mp}} evicted"),(f'sum by (instance, mp) (rate(disgrafs_cache_corrupt_files_total{{{SEL}}}[{R}]))',"{{instance}} {{mp}} corrupt")], "ops")
ts("Passthrough opens/s per node", [(f'sum by (instance, mp) (rate(disgrafs_cache_passthrough_opens_total{{{SEL}}}[{R}]))',"{{instance}} {{mp}}")], "ops")
ts("Opens by check per node", [(f'sum by (instance, mp, check) (rate(disgrafs_coherence_opens_total{{{SEL}}}[{R}]))',"{{instance}} {{mp}} {{check}}")], "ops", desc="Read-only opens of regular files: local (the copy known current, no metadata round trip) or engine (asked the metadata engine).")
ts("Change stream: trusted, last message age per node", [(f'sum by (instance, mp) (disgrafs_coherence_trusted{{{SEL}}})',"{{instance}} {{mp}} trusted"),(f'max by (instance, mp) (disgrafs_coherence_stream_last_message_age_seconds{{{SEL}}})',"{{instance}} {{mp}} last message age (s)")], "short", desc="trusted: 1 while opens of copies known current skip the metadata engine. Pings arrive every 250 ms on a healthy stream.")
ts("Change stream events/s per node", [(f'sum by (instance, mp) (rate(disgrafs_coherence_{k}_total{{{SEL}}}[{R}]))',"{{instance}} {{mp}} "+k) for k in ("invalidations_sent","invalidations_received","tracked_changes","fallbacks","writer_wait_expired")], "ops", desc="Changes this node published and applied, changes Redis key tracking reported (every writer), lapses of trust, and writer waits ended by a lease instead of an acknowledgement.")
ts("Writer wait p50/p99 per node", [(f'histogram_quantile({q}, sum by (instance, mp, le) (rate(disgrafs_coherence_writer_wait_seconds_bucket{{{SEL}}}[{R}])))',"{{instance}} {{mp}} p"+n) for q,n in (("0.5","50"),("0.99","99"))], "s", desc="How long a change of this node waited for the other trusting nodes to apply it.")
endrow()

row("Prefetch and warmup")
ts("Prefetch/s (summed)", [(f'sum(rate(disgrafs_prefetch_{k}_total{{{SEL}}}[{R}]))',k) for k in ("queued","done","used","wasted","dropped","failed")], "ops")
ts("Prefetch queue per node", [(f'sum by (instance, mp) (disgrafs_prefetch_queue_length{{{SEL}}})',"{{instance}} {{mp}}")], "short")
ts("Prefetch used vs wasted per node", [(f'sum by (instance, mp) (rate(disgrafs_prefetch_used_total{{{SEL}}}[{R}]))',"{{instance}} {{mp}} used"),(f'sum by (instance, mp) (rate(disgrafs_prefetch_wasted_total{{{SEL}}}[{R}]))',"{{instance}} {{mp}} wasted")], "ops")
ts("Warmup per node", [(f'sum by (instance, mp) (rate(disgrafs_warmup_bytes_total{{{SEL}}}[{R}]))',"{{instance}} {{mp}} bytes/s")], "Bps")
ts("Warmup files/s and running warmups per node", [(f'sum by (instance, mp) (rate(disgrafs_warmup_files_total{{{SEL}}}[{R}]))',"{{instance}} {{mp}} files/s"),(f'sum by (instance, mp) (disgrafs_warmup_active{{{SEL}}})',"{{instance}} {{mp}} running")], "short")
ts("Co-access edges/s (summed)", [(f'sum(rate(disgrafs_coaccess_edges_total{{{SEL}}}[{R}]))',"edges")], "ops")
endrow()

row("Pre-allocation")
ts("Pre-allocated creates/s (summed)", [(f'sum(rate(disgrafs_prealloc_hits_total{{{SEL}}}[{R}]))',"hits"),(f'sum(rate(disgrafs_prealloc_misses_total{{{SEL}}}[{R}]))',"misses")], "ops")
ts("Pool and pending renames per node", [(f'sum by (instance, mp) (disgrafs_prealloc_pool_files{{{SEL}}})',"{{instance}} {{mp}} pool"),(f'sum by (instance, mp) (disgrafs_prealloc_pending_renames{{{SEL}}})',"{{instance}} {{mp}} pending")], "short")
ts("Rename latency p99 per node", [(f'histogram_quantile(0.99, sum by (instance, mp, le) (rate(disgrafs_prealloc_rename_latency_seconds_bucket{{{SEL}}}[{R}])))',"{{instance}} {{mp}}")], "s")
ts("Conflicts and lost files per node", [(f'sum by (instance, mp) (increase(disgrafs_prealloc_conflicts_total{{{SEL}}}[{R}]))',"{{instance}} {{mp}} conflicts"),(f'sum by (instance, mp) (increase(disgrafs_prealloc_lost_total{{{SEL}}}[{R}]))',"{{instance}} {{mp}} lost")], "short")
endrow()

row("eBPF read accounting")
ts("Bytes read by source (summed)", [(f'sum by (source) (rate(disgrafs_read_bytes_total{{{SEL}}}[{R}]))',"{{source}}")], "Bps", desc="What applications read, by where it came from: passthrough (the cached copy), page_cache, daemon (FUSE READ). Needs --bpf.", stack=True)
ts("Bytes read by source per node", [(f'sum by (instance, mp, source) (rate(disgrafs_read_bytes_total{{{SEL}}}[{R}]))',"{{instance}} {{mp}} {{source}}")], "Bps")
ts("Read calls/s by class (summed)", [(f'sum by (class) (rate(disgrafs_read_calls_total{{{SEL}}}[{R}]))',"{{class}}")], "ops")
ts("FUSE request latency p99 by opcode (kernel view)", [(f'histogram_quantile(0.99, sum by (opcode, le) (rate(disgrafs_fuse_request_duration_seconds_bucket{{{SEL}}}[{R}])))',"{{opcode}}")], "s", desc="From the kernel queueing a request to its reply, measured by eBPF.")
ts("eBPF on per node", [(f'min by (instance, mp) (disgrafs_bpf_enabled{{{SEL}}})',"{{instance}} {{mp}}")], "short", desc="1 when eBPF read accounting runs; see 'disgrafs status' for why not.")
ts("Opens seen by eBPF/s per node", [(f'sum by (instance, mp) (rate(disgrafs_bpf_open_events_total{{{SEL}}}[{R}]))',"{{instance}} {{mp}}")], "ops")
endrow()

row("Graph index")
ts("Graph available per node", [(f'min by (instance, mp, backend) (disgrafs_graph_available{{{SEL}}})',"{{instance}} {{mp}} {{backend}}")], "short", desc="1 while the graph store answers.")
ts("Graph calls/s by operation (summed)", [(f'sum by (backend, op) (rate(disgrafs_graph_query_duration_seconds_count{{{SEL}}}[{R}])) > 0',"{{backend}} {{op}}")], "ops")
ts("Graph latency p99 by backend and operation", [(f'histogram_quantile(0.99, sum by (backend, op, le) (rate(disgrafs_graph_query_duration_seconds_bucket{{{SEL}}}[{R}])))',"{{backend}} {{op}}")], "s")
ts("Graph errors/s by kind (summed)", [(f'sum by (backend, kind) (rate(disgrafs_graph_errors_total{{{SEL}}}[{R}]))',"{{backend}} {{kind}}")], "ops")
endrow()

row("Tagger")
ts("Files auto-tagged/s per node", [(f'sum by (instance, mp) (rate(disgrafs_tagger_files_tagged_total{{{SEL}}}[{R}]))',"{{instance}} {{mp}} tagged"),(f'sum by (instance, mp) (rate(disgrafs_tagger_failures_total{{{SEL}}}[{R}]))',"{{instance}} {{mp}} failed")], "ops")
ts("Tag queue per node", [(f'sum by (instance, mp) (disgrafs_tagger_queue_length{{{SEL}}})',"{{instance}} {{mp}} auto-tag queue"),(f'sum by (instance, mp) (disgrafs_tagger_index_pending{{{SEL}}})',"{{instance}} {{mp}} index pending")], "short")
ts("Tag changes/s (summed)", [(f'sum(rate(disgrafs_tagger_tag_changes_total{{{SEL}}}[{R}]))',"changes"),(f'sum(rate(disgrafs_tagger_index_errors_total{{{SEL}}}[{R}]))',"index errors")], "ops")
ts("Dropped (queues full) per node", [(f'sum by (instance, mp) (increase(disgrafs_tagger_dropped_total{{{SEL}}}[{R}]))',"{{instance}} {{mp}} auto-tag"),(f'sum by (instance, mp) (increase(disgrafs_tagger_index_dropped_total{{{SEL}}}[{R}]))',"{{instance}} {{mp}} index")], "short")
endrow()

row("Daemon process")
ts("CPU per node", [(f'sum by (instance, mp) (rate(process_cpu_seconds_total{{{SEL}}}[{R}]))',"{{instance}} {{mp}}")], "percentunit")
ts("Memory (RSS) per node", [(f'sum by (instance, mp) (process_resident_memory_bytes{{{SEL}}})',"{{instance}} {{mp}}")], "bytes")
ts("Goroutines per node", [(f'sum by (instance, mp) (go_goroutines{{{SEL}}})',"{{instance}} {{mp}}")], "short")
ts("Write buffer in use per node", [(f'sum by (instance, mp) (juicefs_used_buffer_size_bytes{{{SEL}}})',"{{instance}} {{mp}}")], "bytes")
endrow()

def var(name,label,query,multi=True):
    return {"name":name,"label":label,"type":"query","datasource":{"type":"prometheus","uid":"${datasource}"},
            "query":{"query":query,"refId":"PrometheusVariableQueryEditor-VariableQuery"},"definition":query,
            "refresh":2,"multi":multi,"includeAll":True,"allValue":".*","current":{"selected":True,"text":["All"],"value":["$__all"]},"sort":1,"hide":0,"regex":"","options":[]}
dash={
 "__inputs":[],
 "title":"DisGraFS","uid":"disgrafs-nodes","description":"DisGraFS mounts on every node: FUSE, whole-file cache, prefetch and warmup, pre-allocation, eBPF reads, JuiceFS, graph index, tagger, daemon. Scrape config: deploy/prometheus/.",
 "tags":["disgrafs","juicefs","storage"],"timezone":"browser","schemaVersion":39,"version":1,"editable":True,
 "time":{"from":"now-1h","to":"now"},"refresh":"10s","graphTooltip":1,
 "templating":{"list":[
   {"name":"datasource","label":"Data source","type":"datasource","query":"prometheus","current":{},"hide":0,"refresh":1,"regex":"","options":[]},
   var("instance","Node",'label_values(disgrafs_fuse_ops_total, instance)'),
   var("mp","Mountpoint",'label_values(disgrafs_fuse_ops_total{instance=~"$instance"}, mp)'),
 ]},
 "annotations":{"list":[]},
 "panels":panels,
}
import os
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'disgrafs.json'), 'w') as f:
    json.dump(dash, f, indent=2)
    f.write('\n')
print(len(panels), 'panels')
