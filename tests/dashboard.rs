//! The Grafana dashboard (`docs/grafana/walmdb-dashboard.json`) and the alert rules in
//! `docs/grafana/README.md` against the metrics the engine really exposes: the dashboard is
//! well-formed, and every `walmdb_*` name its queries and the rules use is a sample name of a
//! real database's Prometheus exposition, so renaming a metric breaks this test.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;

fn doc_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("docs/grafana")
        .join(name)
}

fn dashboard() -> Value {
    let path = doc_path("walmdb-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?} is not valid JSON: {e}"))
}

fn readme() -> String {
    let path = doc_path("README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// The text of the README's ```yaml blocks (the alert rules).
fn alert_rules(readme: &str) -> String {
    let mut out = String::new();
    let mut rest = readme;
    while let Some(start) = rest.find("```yaml") {
        let block = &rest[start + "```yaml".len()..];
        let end = block.find("```").expect("an unterminated ```yaml block");
        out.push_str(&block[..end]);
        out.push('\n');
        rest = &block[end + 3..];
    }
    out
}

/// Every panel, those inside (collapsed) rows included.
fn panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            if let Some(inner) = p.get("panels") {
                walk(inner, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

fn is_row(panel: &Value) -> bool {
    panel["type"] == "row"
}

fn title(panel: &Value) -> &str {
    panel["title"].as_str().unwrap_or("<untitled>")
}

/// `(panel title, expression)` of every query target.
fn exprs(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push((title(p).to_string(), e.to_string()));
            }
        }
    }
    out
}

fn variable<'a>(dash: &'a Value, name: &str) -> &'a Value {
    dash["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no `{name}` template variable"))
}

/// A query variable's query, either the string form or the editor's object form.
fn variable_query(var: &Value) -> &str {
    var["query"]
        .as_str()
        .or_else(|| var["query"]["query"].as_str())
        .unwrap_or_else(|| panic!("variable {} has no query", var["name"]))
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every `walmdb_[a-z_]+` in `text` (not part of a longer identifier), with its byte offset.
fn metric_names_at(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("walmdb_") {
        if text[..at].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let tail = &text[at + "walmdb_".len()..];
        let len = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        if len > 0 {
            out.push((at, format!("walmdb_{}", &tail[..len])));
        }
    }
    out
}

fn metric_names(text: &str) -> Vec<String> {
    metric_names_at(text).into_iter().map(|(_, n)| n).collect()
}

/// A real database's exposition: a few commits and a checkpoint, encoded from a registry.
fn exposition() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = walmdb::Db::open_with(dir.path(), walmdb::Config::default()).expect("open");
        for i in 0..5u8 {
            let mut t = db.write().expect("write");
            t.put("t", &[b'k', i], b"v").expect("put");
            t.commit().expect("commit");
        }
        db.checkpoint().expect("checkpoint");
        let mut registry = prometheus_client::registry::Registry::default();
        db.register_metrics(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        drop(db);
        text
    })
}

/// Names of the exposition's samples (`walmdb_commits_total`, `..._bucket`, ...).
fn sample_names(expo: &str) -> BTreeSet<String> {
    expo.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l[..l.find(['{', ' ']).unwrap_or(l.len())].to_string())
        .collect()
}

/// Family name → type, from the `# TYPE` lines.
fn families(expo: &str) -> BTreeMap<String, String> {
    expo.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, ty)| (name.to_string(), ty.to_string()))
        .collect()
}

/// The family a sample name belongs to, and its type.
fn family_of<'a>(fams: &'a BTreeMap<String, String>, sample: &str) -> Option<(&'a str, &'a str)> {
    let candidates = [
        sample,
        sample.strip_suffix("_total").unwrap_or(""),
        sample.strip_suffix("_bucket").unwrap_or(""),
        sample.strip_suffix("_sum").unwrap_or(""),
        sample.strip_suffix("_count").unwrap_or(""),
    ];
    candidates.iter().filter(|c| !c.is_empty()).find_map(|c| {
        fams.get_key_value(*c)
            .map(|(k, v)| (k.as_str(), v.as_str()))
    })
}

#[test]
fn exposition_is_what_the_checks_expect() {
    let expo = exposition();
    let samples = sample_names(expo);
    for name in [
        "walmdb_commits_total",
        "walmdb_commit_latency_seconds_bucket",
        "walmdb_poisoned",
    ] {
        assert!(samples.contains(name), "{name} missing from:\n{expo}");
    }
    assert!(expo.contains("durability=\"group_commit\""), "{expo}");
    assert!(expo.contains("walmdb_commits_total 5"), "{expo}");
}

#[test]
fn dashboard_is_well_formed() {
    let dash = dashboard();
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let schema = dash["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");

    let all = panels(&dash);
    assert!(all.iter().filter(|p| !is_row(p)).count() >= 30);
    let mut ids = HashSet::new();
    for p in &all {
        let id = p["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: no id", title(p)));
        assert!(ids.insert(id), "panel id {id} ({}) is not unique", title(p));
    }

    let mut rects = Vec::new();
    for p in &all {
        let g = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| {
            g[k].as_u64()
                .unwrap_or_else(|| panic!("{}: gridPos.{k}", title(p)))
        });
        assert!(w > 0 && h > 0 && x + w <= 24, "{}: gridPos {g}", title(p));
        rects.push((title(p), x, y, w, h));

        if is_row(p) {
            assert!(p.get("targets").is_none(), "row {} has targets", title(p));
            continue;
        }
        assert!(
            p["datasource"]["uid"]
                .as_str()
                .is_some_and(|u| !u.is_empty()),
            "{}: no datasource",
            title(p)
        );
        assert_eq!(p["datasource"]["type"], "prometheus", "{}", title(p));
        assert!(
            p["fieldConfig"]["defaults"]["unit"].as_str().is_some(),
            "{}: no unit",
            title(p)
        );
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        assert!(!targets.is_empty(), "{}: no targets", title(p));
        let mut refs = HashSet::new();
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or("");
            assert!(
                !expr.trim().is_empty(),
                "{}: a target without expr",
                title(p)
            );
            let r = t["refId"].as_str().expect("refId");
            assert!(refs.insert(r), "{}: refId {r} repeated", title(p));
            assert_eq!(
                expr.matches('(').count(),
                expr.matches(')').count(),
                "{}: unbalanced parentheses in {expr}",
                title(p)
            );
        }
    }
    for (i, a) in rects.iter().enumerate() {
        for b in &rects[i + 1..] {
            let apart =
                a.1 + a.3 <= b.1 || b.1 + b.3 <= a.1 || a.2 + a.4 <= b.2 || b.2 + b.4 <= a.2;
            assert!(apart, "panels {} and {} overlap", a.0, b.0);
        }
    }

    let ds = variable(&dash, "datasource");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    for name in ["job", "instance", "db"] {
        let v = variable(&dash, name);
        assert_eq!(v["type"], "query", "variable {name}");
        assert_eq!(v["datasource"]["uid"], "${datasource}", "variable {name}");
        let q = variable_query(v);
        assert!(
            q.starts_with("label_values(walmdb_commits_total")
                && q.ends_with(&format!(", {name})")),
            "variable {name}: {q}"
        );
    }
}

#[test]
fn every_query_selects_by_the_variables() {
    let dash = dashboard();
    let exprs = exprs(&dash);
    assert!(!exprs.is_empty());
    for (panel, expr) in &exprs {
        let names = metric_names_at(expr);
        assert!(!names.is_empty(), "{panel}: no walmdb metric in {expr}");
        for (at, name) in names {
            let rest = &expr[at + name.len()..];
            let selector = rest
                .strip_prefix('{')
                .and_then(|s| s.split_once('}'))
                .map(|(s, _)| s)
                .unwrap_or_else(|| panic!("{panel}: {name} has no label selector in {expr}"));
            for filter in [r#"job=~"$job""#, r#"instance=~"$instance""#, r#"db=~"$db""#] {
                assert!(
                    selector.contains(filter),
                    "{panel}: {name} not filtered by {filter} in {expr}"
                );
            }
        }
    }
}

#[test]
fn functions_fit_the_metric_types() {
    let fams = families(exposition());
    let dash = dashboard();
    let mut all: Vec<(String, String)> = exprs(&dash);
    let rules = alert_rules(&readme());
    for line in rules.lines() {
        all.push(("README alert rules".into(), line.to_string()));
    }
    for (panel, expr) in &all {
        for func in ["rate(", "increase("] {
            for (at, _) in expr.match_indices(func) {
                let Some(name) = metric_names(&expr[at..]).into_iter().next() else {
                    continue;
                };
                let ok = match family_of(&fams, &name) {
                    Some((fam, "counter")) => name == format!("{fam}_total"),
                    Some((fam, "histogram")) => ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name == format!("{fam}{s}")),
                    _ => false,
                };
                assert!(ok, "{panel}: {func}{name}..) is not over a counter: {expr}");
            }
        }
        if let Some(at) = expr.find("histogram_quantile(") {
            let inner = &expr[at..];
            for name in metric_names(inner) {
                assert!(
                    name.ends_with("_bucket"),
                    "{panel}: histogram_quantile over {name}"
                );
            }
            let by = inner
                .find("by (")
                .map(|b| &inner[b + 4..])
                .and_then(|s| s.split_once(')'))
                .map(|(s, _)| s)
                .unwrap_or_else(|| panic!("{panel}: histogram_quantile without `by (le, ..)`"));
            assert!(
                by.split(',').any(|l| l.trim() == "le"),
                "{panel}: histogram_quantile not by le: {expr}"
            );
        }
    }
}

/// The unit a single-metric expression's values are in, when it is plain from the name.
fn expected_unit(expr: &str) -> Option<&'static str> {
    let names = metric_names(expr);
    if names.len() != 1 || expr.contains(" / ") || expr.contains(" - ") {
        return None;
    }
    let name = &names[0];
    if expr.contains("histogram_quantile(") {
        return name.ends_with("_seconds_bucket").then_some("s");
    }
    if expr.contains("increase(") {
        return None;
    }
    if expr.contains("rate(") {
        return Some(if name.ends_with("_bytes_total") {
            "Bps"
        } else if name.ends_with("_seconds_total") {
            // Seconds spent per second.
            "s"
        } else {
            "ops"
        });
    }
    if name.ends_with("_seconds") {
        Some("s")
    } else if name.ends_with("_bytes") {
        Some("bytes")
    } else if name.ends_with("_ratio") {
        Some("percentunit")
    } else {
        None
    }
}

#[test]
fn panels_have_the_units_of_their_metrics() {
    let dash = dashboard();
    for p in panels(&dash).into_iter().filter(|p| !is_row(p)) {
        let units: Vec<Option<&str>> = p["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| expected_unit(t["expr"].as_str().unwrap_or("")))
            .collect();
        let known: BTreeSet<&str> = units.iter().flatten().copied().collect();
        assert!(known.len() <= 1, "{}: mixed units {known:?}", title(p));
        if let (Some(&want), true) = (known.iter().next(), units.iter().all(Option::is_some)) {
            assert_eq!(
                p["fieldConfig"]["defaults"]["unit"],
                want,
                "{}: unit",
                title(p)
            );
        }
    }
}

#[test]
fn special_values_are_mapped() {
    let dash = dashboard();
    let panels = panels(&dash);
    let using = |metric: &str| -> Vec<&Value> {
        let found: Vec<&Value> = panels
            .iter()
            .copied()
            .filter(|p| {
                p["targets"].as_array().into_iter().flatten().any(|t| {
                    metric_names(t["expr"].as_str().unwrap_or(""))
                        .iter()
                        .any(|n| n == metric)
                })
            })
            .collect();
        assert!(!found.is_empty(), "no panel shows {metric}");
        found
    };
    // -1 means "not measured": a stat maps it to text rather than showing "-1 s".
    for metric in [
        "walmdb_last_sync_age_seconds",
        "walmdb_estimated_recovery_seconds",
        "walmdb_last_scrub_duration_seconds",
    ] {
        for p in using(metric) {
            assert_eq!(p["type"], "stat", "{}", title(p));
            let mappings = p["fieldConfig"]["defaults"]["mappings"]
                .as_array()
                .unwrap_or_else(|| panic!("{}: no value mappings", title(p)));
            let mapped = mappings.iter().any(|m| {
                m["type"] == "value"
                    && m["options"]["-1"]["text"]
                        .as_str()
                        .is_some_and(|t| !t.is_empty())
            });
            assert!(mapped, "{}: -1 not mapped to text", title(p));
        }
    }
    // The health flags turn red at 1.
    for metric in ["walmdb_poisoned", "walmdb_storage_full"] {
        for p in using(metric) {
            assert_eq!(p["type"], "stat", "{}", title(p));
            let steps = p["fieldConfig"]["defaults"]["thresholds"]["steps"]
                .as_array()
                .unwrap_or_else(|| panic!("{}: no thresholds", title(p)));
            assert!(
                steps.iter().any(|s| s["color"] == "red" && s["value"] == 1),
                "{}: not red at 1",
                title(p)
            );
        }
    }
    let util = using("walmdb_queue_utilisation_ratio");
    assert!(util.iter().any(|p| {
        let steps = &p["fieldConfig"]["defaults"]["thresholds"]["steps"];
        p["type"] == "gauge"
            && [0.8, 0.95].iter().all(|v| {
                steps
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|s| s["value"].as_f64() == Some(*v))
            })
    }));
}

#[test]
fn every_metric_used_is_exposed() {
    let expo = exposition();
    let samples = sample_names(expo);
    let dash = dashboard();
    let readme = readme();
    let rules = alert_rules(&readme);
    assert!(
        rules.matches("- alert:").count() >= 6,
        "the README's alert rules:\n{rules}"
    );

    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut note = |name: String, place: &str| {
        used.entry(name).or_default().insert(place.to_string());
    };
    for (panel, expr) in exprs(&dash) {
        for name in metric_names(&expr) {
            note(name, &format!("panel {panel:?}"));
        }
    }
    for var in ["job", "instance", "db"] {
        for name in metric_names(variable_query(variable(&dash, var))) {
            note(name, &format!("variable {var}"));
        }
    }
    let in_rules = metric_names(&rules);
    assert!(in_rules.len() >= 6, "{rules}");
    for name in in_rules {
        note(name, "README alert rules");
    }
    // The README's prose names metrics too (other rules worth setting).
    for name in metric_names(&readme) {
        note(name, "README");
    }

    let missing: Vec<String> = used
        .iter()
        .filter(|(name, _)| !samples.contains(*name))
        .map(|(name, places)| format!("{name} (used by {places:?})"))
        .collect();
    assert!(
        missing.is_empty(),
        "not in the exposition:\n  {}\nexposition:\n{expo}",
        missing.join("\n  ")
    );
}

/// A new metric should get a panel: every family the engine exposes is on the dashboard.
#[test]
fn dashboard_shows_every_metric() {
    let fams = families(exposition());
    let dash = dashboard();
    let shown: BTreeSet<&str> = exprs(&dash)
        .iter()
        .flat_map(|(_, e)| metric_names(e))
        .filter_map(|n| family_of(&fams, &n).map(|(fam, _)| fam))
        .collect();
    let absent: Vec<&String> = fams
        .keys()
        .filter(|f| !shown.contains(f.as_str()))
        .collect();
    assert!(absent.is_empty(), "no panel shows {absent:?}");
}
