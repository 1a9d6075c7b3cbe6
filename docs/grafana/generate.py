#!/usr/bin/env python3
"""Writes walmdb-dashboard.json beside this script: edit here, run it, commit both.
tests/dashboard.rs checks the result against a real exposition."""
import json

DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'job=~"$job", instance=~"$instance", db=~"$db"'
BY = "job, instance, db"
LEG = "{{instance}} {{db}}"

def m(name, extra=""):
    """A selector of one walmdb metric, filtered by the dashboard's variables."""
    return f'{name}{{{SEL}{", " + extra if extra else ""}}}'

def rate(name):
    return f"sum by ({BY}) (rate({m(name)}[$__rate_interval]))"

def gauge(name):
    return f"max by ({BY}) ({m(name)})"

def q(quant, name, extra_by=""):
    by = f"le, {BY}" + (f", {extra_by}" if extra_by else "")
    return f"histogram_quantile({quant}, sum by ({by}) (rate({m(name)}[$__rate_interval])))"

def t(expr, legend, instant=False):
    d = {"datasource": DS, "expr": expr, "legendFormat": legend, "range": not instant}
    if instant:
        d["instant"] = True
    return d

panels = []
next_id = [1]
cursor = {"x": 0, "y": 0, "h": 0}

def place(w, h):
    if cursor["x"] + w > 24:
        cursor["x"] = 0
        cursor["y"] += cursor["h"]
        cursor["h"] = 0
    pos = {"x": cursor["x"], "y": cursor["y"], "w": w, "h": h}
    cursor["x"] += w
    cursor["h"] = max(cursor["h"], h)
    return pos

def row(title):
    if cursor["x"] != 0 or cursor["h"]:
        cursor["y"] += cursor["h"]
    cursor["x"], cursor["h"] = 0, 0
    panels.append({
        "type": "row", "id": next_id[0], "title": title, "collapsed": False,
        "gridPos": {"x": 0, "y": cursor["y"], "w": 24, "h": 1}, "panels": [],
    })
    next_id[0] += 1
    cursor["y"] += 1

def panel(ptype, title, desc, targets, unit, w=8, h=8, extra_defaults=None, options=None,
          overrides=None):
    refs = iter("ABCDEFGHIJ")
    for tg in targets:
        tg["refId"] = next(refs)
    defaults = {"unit": unit}
    if ptype == "timeseries":
        defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                              "showPoints": "never", "spanNulls": False}
        defaults["color"] = {"mode": "palette-classic"}
        if options is None:
            options = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                       "tooltip": {"mode": "multi", "sort": "desc"}}
    for k, v in (extra_defaults or {}).items():
        if k == "custom" and "custom" in defaults:
            defaults["custom"] = {**defaults["custom"], **v}
        else:
            defaults[k] = v
    p = {
        "type": ptype, "id": next_id[0], "title": title, "description": desc,
        "datasource": DS, "gridPos": place(w, h), "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options or {},
    }
    next_id[0] += 1
    panels.append(p)

def thresholds(*steps):
    out = [{"color": steps[0], "value": None}]
    for v, c in steps[1:]:
        out.append({"color": c, "value": v})
    return {"mode": "absolute", "steps": out}

STAT_OPTS = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
             "colorMode": "background", "graphMode": "none", "justifyMode": "auto",
             "orientation": "auto", "textMode": "value_and_name", "wideLayout": True,
             "showPercentChange": False}
STAT_OPTS_AREA = dict(STAT_OPTS, graphMode="area", colorMode="value")

def flag_stat(title, desc, name, bad_text):
    panel("stat", title, desc, [t(gauge(name), LEG, instant=True)], "none", w=6, h=4,
          extra_defaults={
              "thresholds": thresholds("green", (1, "red")),
              "mappings": [{"type": "value", "options": {
                  "0": {"text": "OK", "color": "green", "index": 0},
                  "1": {"text": bad_text, "color": "red", "index": 1}}}],
              "color": {"mode": "thresholds"}},
          options=STAT_OPTS)

def not_measured_mappings(text):
    # -1 means "not measured"; the value mapping and the range mapping both catch it.
    return [
        {"type": "value", "options": {"-1": {"text": text, "color": "text", "index": 0}}},
        {"type": "range", "options": {"from": -1.5, "to": -0.5,
                                      "result": {"text": text, "color": "text", "index": 1}}},
    ]

# ---- Health ----
row("Health")
flag_stat("Poisoned", "walmdb_poisoned: 1 when an I/O failure poisoned the engine; it refuses "
          "commits until the database is reopened.", "walmdb_poisoned", "POISONED")
flag_stat("Storage full", "walmdb_storage_full: 1 while LMDB is full at max_map_size or the disk "
          "is full; commits are refused.", "walmdb_storage_full", "FULL")
panel("stat", "Commits/s", "Commits written to the log per second.",
      [t(rate("walmdb_commits_total"), LEG)], "ops", w=6, h=4,
      extra_defaults={"thresholds": thresholds("blue"), "color": {"mode": "thresholds"}},
      options=STAT_OPTS_AREA)
panel("stat", "Checkpoint failures (range)",
      "Checkpoints that failed during the dashboard's time range.",
      [t(f"sum by ({BY}) (increase({m('walmdb_checkpoint_failures_total')}[$__range]))", LEG,
         instant=True)], "none", w=6, h=4,
      extra_defaults={"thresholds": thresholds("green", (1, "red")), "decimals": 0,
                      "color": {"mode": "thresholds"}},
      options=STAT_OPTS)

# ---- Throughput ----
row("Throughput")
panel("timeseries", "Commits, conflicts, aborts, timeouts",
      "Per second: commits written to the log, commits refused for a conflict, write "
      "transactions dropped without commit, calls refused past txn_timeout.",
      [t(rate("walmdb_commits_total"), "commits " + LEG),
       t(rate("walmdb_conflicts_total"), "conflicts " + LEG),
       t(rate("walmdb_aborts_total"), "aborts " + LEG),
       t(rate("walmdb_txn_timeouts_total"), "txn timeouts " + LEG)], "ops")
panel("timeseries", "Commit groups/s",
      "Commit groups written per second (one write and at most one sync each).",
      [t(rate("walmdb_groups_total"), "groups " + LEG)], "ops")
panel("timeseries", "Commits per group",
      "Mean group size, rate(group_size_sum) / rate(group_size_count), and the p99.",
      [t(f"{rate('walmdb_group_size_sum')} / {rate('walmdb_group_size_count')}", "mean " + LEG),
       t(q(0.99, "walmdb_group_size_bucket"), "p99 " + LEG)], "short")

# ---- Latency ----
row("Latency")
for quant, label in [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")]:
    panel("timeseries", f"Commit latency {label} by durability",
          f"{label} of successful commits (commit() to its return), per durability level. "
          "Buckets are powers of two: an estimate at most twice the true value.",
          [t(q(quant, "walmdb_commit_latency_seconds_bucket", "durability"),
             "{{durability}} " + LEG)], "s")
panel("timeseries", "Sync latency p50 / p99", "Duration of log syncs.",
      [t(q(0.5, "walmdb_sync_latency_seconds_bucket"), "p50 " + LEG),
       t(q(0.99, "walmdb_sync_latency_seconds_bucket"), "p99 " + LEG)], "s", w=12)
panel("timeseries", "Apply / checkpoint duration p99",
      "p99 of LMDB apply transactions and of checkpoints (LMDB sync plus segment retirement).",
      [t(q(0.99, "walmdb_apply_latency_seconds_bucket"), "apply p99 " + LEG),
       t(q(0.99, "walmdb_checkpoint_duration_seconds_bucket"), "checkpoint p99 " + LEG)],
      "s", w=12)

# ---- Log ----
row("Log")
panel("timeseries", "Log bytes/s",
      "Record payload committed (before framing and compression) and bytes written to "
      "log segments (after compression and framing).",
      [t(rate("walmdb_log_record_bytes_total"), "payload " + LEG),
       t(rate("walmdb_log_written_bytes_total"), "written " + LEG)], "Bps")
panel("timeseries", "Written / payload",
      "Bytes written to the log per payload byte: under 100% compression wins; over 100% "
      "framing outweighs it (small records).",
      [t(f"{rate('walmdb_log_written_bytes_total')} / {rate('walmdb_log_record_bytes_total')}",
         LEG)], "percentunit")
panel("timeseries", "Syncs/s", "Syncs of log data per second.",
      [t(rate("walmdb_syncs_total"), "syncs " + LEG)], "ops")
panel("stat", "Last sync age",
      "Time since the last successful log sync; \"none\" when none since open (-1).",
      [t(gauge("walmdb_last_sync_age_seconds"), LEG)], "s", w=6, h=8,
      extra_defaults={"thresholds": thresholds("green", (10, "yellow"), (60, "red")),
                      "mappings": not_measured_mappings("none"),
                      "color": {"mode": "thresholds"}},
      options=STAT_OPTS_AREA)
panel("timeseries", "Written vs durable LSN",
      "Highest LSN written to the log and highest LSN durable in it.",
      [t(gauge("walmdb_written_lsn"), "written " + LEG),
       t(gauge("walmdb_durable_lsn"), "durable " + LEG)], "short", w=9)
panel("timeseries", "Commits written, not durable",
      "written_lsn - durable_lsn: commits a power loss could lose now.",
      [t(f"{gauge('walmdb_written_lsn')} - {gauge('walmdb_durable_lsn')}", LEG)], "short", w=9)

# ---- Queue & backpressure ----
row("Queue & backpressure")
panel("timeseries", "Queued commits", "Commits waiting in the commit queue.",
      [t(gauge("walmdb_queue_commits"), LEG)], "short", w=7)
panel("timeseries", "Queued bytes", "Bytes waiting in the commit queue.",
      [t(gauge("walmdb_queue_bytes"), LEG)], "bytes", w=7)
panel("gauge", "Queue utilisation",
      "The fuller of the queue's count and byte bounds. Health turns Degraded at 0.8.",
      [t(gauge("walmdb_queue_utilisation_ratio"), LEG, instant=True)], "percentunit", w=4,
      extra_defaults={"min": 0, "max": 1,
                      "thresholds": thresholds("green", (0.8, "orange"), (0.95, "red")),
                      "color": {"mode": "thresholds"}},
      options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
               "showThresholdLabels": False, "showThresholdMarkers": True, "orientation": "auto"})
panel("timeseries", "Queue waits and refusals",
      "Per second: commits that found the queue full and waited, refused with Backpressure "
      "(queue stayed full), waited for the apply backlog, were slowed down by it (past half "
      "of overlay_max_bytes), refused with ApplyBacklog.",
      [t(rate("walmdb_queue_full_waits_total"), "queue-full waits " + LEG),
       t(rate("walmdb_backpressure_refusals_total"), "backpressure refusals " + LEG),
       t(rate("walmdb_backlog_waits_total"), "backlog waits " + LEG),
       t(rate("walmdb_backlog_delays_total"), "backlog slowdowns " + LEG),
       t(rate("walmdb_backlog_refusals_total"), "backlog refusals " + LEG)], "ops", w=6)

# ---- Apply & overlay ----
row("Apply & overlay")
panel("timeseries", "Applied lag",
      "Age of the oldest commit visible but not yet applied to LMDB (0 when none). Health "
      "turns Degraded past 30 s.",
      [t(gauge("walmdb_applied_lag_seconds"), LEG)], "s",
      extra_defaults={"thresholds": thresholds("green", (30, "red")),
                      "custom": {"thresholdsStyle": {"mode": "dashed"}}})
panel("timeseries", "Applied lag (commits)", "visible_lsn - applied_lsn.",
      [t(gauge("walmdb_applied_lag_lsns"), LEG)], "short")
panel("timeseries", "Visible / applied / checkpoint LSN",
      "Newest commit new transactions see, LMDB holds, and LMDB holds durably.",
      [t(gauge("walmdb_visible_lsn"), "visible " + LEG),
       t(gauge("walmdb_applied_lsn"), "applied " + LEG),
       t(gauge("walmdb_checkpoint_lsn"), "checkpoint " + LEG)], "short")
panel("timeseries", "Overlay bytes",
      "Bytes of committed versions held in memory until applied and evicted "
      "(bounded by overlay_max_bytes).",
      [t(gauge("walmdb_overlay_bytes"), LEG)], "bytes")
panel("timeseries", "Apply rate and slowdown",
      "Overlay bytes per second the applier applies when busy, and the rate slowed-down "
      "commits are let through at (0 when commits are not slowed down).",
      [t(gauge("walmdb_apply_rate_bytes_per_second"), "applier " + LEG),
       t(gauge("walmdb_delayed_rate_bytes_per_second"), "commits let through " + LEG)], "Bps")
panel("timeseries", "Commit stall",
      "Seconds commits spent slowed down or waiting for the apply backlog, per second, "
      "summed over committing threads.",
      [t(rate("walmdb_backlog_stall_seconds_total"), LEG)], "s")
panel("timeseries", "Overlay versions", "Versions held in the overlay.",
      [t(gauge("walmdb_overlay_versions"), LEG)], "short")
panel("timeseries", "Apply batches and ops/s",
      "LMDB apply transactions and operations applied to LMDB, per second.",
      [t(rate("walmdb_apply_batches_total"), "batches " + LEG),
       t(rate("walmdb_applied_ops_total"), "ops " + LEG)], "ops")

# ---- Checkpoints & recovery ----
row("Checkpoints & recovery")
panel("timeseries", "Checkpoints/s", "Checkpoints done and failed, per second.",
      [t(rate("walmdb_checkpoints_total"), "done " + LEG),
       t(rate("walmdb_checkpoint_failures_total"), "failed " + LEG)], "ops", w=6,
      overrides=[{"matcher": {"id": "byRegexp", "options": "^failed.*"},
                  "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}}]}])
panel("timeseries", "Log segments",
      "Live segments (the active one included), retired files kept for reuse, and "
      "segments retired and archived per second.",
      [t(gauge("walmdb_segments_live"), "live " + LEG),
       t(gauge("walmdb_segments_spare"), "spare " + LEG),
       t(rate("walmdb_segments_retired_total"), "retired/s " + LEG),
       t(rate("walmdb_segments_archived_total"), "archived/s " + LEG)], "short", w=6)
panel("timeseries", "Replay estimate", "Log bytes a recovery would replay now.",
      [t(gauge("walmdb_replay_estimate_bytes"), LEG)], "bytes", w=6)
panel("stat", "Estimated recovery time",
      "The replay estimate at the applier's measured rate; \"n/a\" (-1) until the applier "
      "has applied something.",
      [t(gauge("walmdb_estimated_recovery_seconds"), LEG)], "s", w=6,
      extra_defaults={"thresholds": thresholds("green", (30, "yellow"), (120, "red")),
                      "mappings": not_measured_mappings("n/a"),
                      "color": {"mode": "thresholds"}},
      options=STAT_OPTS_AREA)

# ---- LMDB ----
row("LMDB")
panel("timeseries", "Map used / size / max",
      "Bytes of the map in use (free pages kept for reuse included), the map's size now, "
      "and its ceiling (max_map_size).",
      [t(gauge("walmdb_map_used_bytes"), "used " + LEG),
       t(gauge("walmdb_map_size_bytes"), "size " + LEG),
       t(gauge("walmdb_map_max_bytes"), "max " + LEG)], "bytes")
panel("gauge", "Map used of max", "walmdb_map_used_bytes / walmdb_map_max_bytes.",
      [t(f"{gauge('walmdb_map_used_bytes')} / {gauge('walmdb_map_max_bytes')}", LEG,
         instant=True)], "percentunit", w=4,
      extra_defaults={"min": 0, "max": 1,
                      "thresholds": thresholds("green", (0.8, "orange"), (0.95, "red")),
                      "color": {"mode": "thresholds"}},
      options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
               "showThresholdLabels": False, "showThresholdMarkers": True, "orientation": "auto"})
panel("timeseries", "Reader slots", "LMDB reader slots in use and configured (max_readers).",
      [t(gauge("walmdb_readers_used"), "used " + LEG),
       t(gauge("walmdb_readers_max"), "max " + LEG)], "short", w=6)
panel("timeseries", "Map resizes", "Times the map grew, per interval.",
      [t(f"sum by ({BY}) (increase({m('walmdb_map_resizes_total')}[$__rate_interval]))",
         "resizes " + LEG)], "short", w=6,
      extra_defaults={"custom": {"drawStyle": "bars", "fillOpacity": 80}, "decimals": 0})
panel("timeseries", "Open snapshots", "Open read and write transactions.",
      [t(gauge("walmdb_open_snapshots"), LEG)], "short", w=12)
panel("timeseries", "Oldest snapshot age",
      "Age of the oldest open transaction; it pins LMDB pages and overlay versions.",
      [t(gauge("walmdb_oldest_snapshot_age_seconds"), LEG)], "s", w=12)

def var_query(name, label, query):
    return {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
        "current": {}, "options": [], "regex": "", "sort": 1, "hide": 0,
    }

dash = {
    "annotations": {"list": [{
        "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts", "type": "dashboard"}]},
    "description": "walmdb: group-commit WAL in front of LMDB (metrics from Db::register_metrics)",
    "editable": True,
    "fiscalYearStartMonth": 0,
    "graphTooltip": 1,
    "id": None,
    "links": [],
    "panels": panels,
    "refresh": "30s",
    "schemaVersion": 39,
    "tags": ["walmdb", "lmdb", "storage"],
    "templating": {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource",
         "query": "prometheus", "current": {}, "hide": 0, "includeAll": False, "multi": False,
         "options": [], "refresh": 1, "regex": ""},
        var_query("job", "Job", "label_values(walmdb_commits_total, job)"),
        var_query("instance", "Instance",
                  'label_values(walmdb_commits_total{job=~"$job"}, instance)'),
        var_query("db", "Database",
                  'label_values(walmdb_commits_total{job=~"$job", instance=~"$instance"}, db)'),
    ]},
    "time": {"from": "now-1h", "to": "now"},
    "timepicker": {},
    "timezone": "browser",
    "title": "walmdb",
    "uid": "walmdb-overview",
    "version": 1,
    "weekStart": "",
}

import os
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "walmdb-dashboard.json"), "w") as f:
    json.dump(dash, f, indent=2)
    f.write("\n")
print(len(panels), "panels")
