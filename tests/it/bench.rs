//! `hookledger bench` at small sizes: every scenario completes and its counts add up. Speed is
//! reported by the command, never asserted here.
//!
//! The scenarios check their own counts and fail the run when they do not add up (`deliver`'s
//! records per delivery, for one), so these tests assert what a run could get wrong and still
//! finish: the figures' arithmetic, the shapes they claim (group commit groups, re-drive's pick
//! skips stalled webhooks) and memory. The `due` scenario's memory figure is an RSS delta,
//! which other tests running in the same process would disturb, so it runs in a child process
//! of its own: this test binary re-executed with `--ignored` and a filter that runs only
//! [`due_child`], a helper that is `#[ignore]`d and fails without the environment the parent
//! sets.

use std::process::Command;

use hookledger::bench::{self, find, Figure, Options};
use hookledger::delivery::engine::EngineConfig;
use serde_json::Value;

const CHILD_VAR: &str = "HOOKLEDGER_TEST_BENCH_CHILD";
/// What the child prints before its figures (as JSON), on one line.
const FIGURES: &str = "FIGURES:";

fn run(scenario: &str, options: Options) -> Vec<Figure> {
    let options = Options {
        scenario: scenario.into(),
        ..options
    };
    bench::run(&options, &mut |_| {}).expect("bench run")
}

fn value(figures: &[Figure], id: &str) -> f64 {
    find(figures, id)
        .unwrap_or_else(|| panic!("no figure {id} in {figures:#?}"))
        .value
}

#[test]
fn deliver_1000_events_all_delivered_with_three_records_each() {
    let figures = run("deliver", Options::small("deliver"));
    assert_eq!(value(&figures, "deliver.delivered"), 1000.0);
    // Three records each is the run's own check (it fails otherwise); the receiver's count of
    // requests is not.
    assert_eq!(value(&figures, "deliver.attempts_per_delivery"), 1.0);
    // Quantiles of one sorted sample: p50 <= p99 <= max.
    let (p50, p99) = (
        value(&figures, "deliver.p50"),
        value(&figures, "deliver.p99"),
    );
    assert!(p50 <= p99, "full rate p50 {p50} > p99 {p99}");
    let half =
        ["half_p50", "half_p99", "half_max"].map(|id| value(&figures, &format!("deliver.{id}")));
    assert!(
        half[0] <= half[1] && half[1] <= half[2],
        "half rate {half:?}"
    );
    assert!(value(&figures, "baseline.rate") > 0.0);
    let rate = find(&figures, "deliver.rate").expect("rate");
    assert!(rate.value > 0.0 && rate.ratio.is_some(), "{rate:?}");
    assert!(value(&figures, "deliver.half_p99") > 0.0);
    assert!(value(&figures, "deliver.commit_p50") > 0.0);
    // The writer's pauses over the half-rate window: it committed, and its bucket bounds are
    // ordered (a window that saw nothing would read u64::MAX here).
    assert!(value(&figures, "deliver.half_writer_commits") >= 1.0);
    let (w50, w99) = (
        value(&figures, "deliver.half_writer_p50"),
        value(&figures, "deliver.half_writer_p99"),
    );
    assert!(
        w50 > 0.0 && w50 <= w99 && w99 < 1e9,
        "writer p50 {w50}, p99 {w99}"
    );
    // CPU per unit of work is measured for both, and compared.
    assert!(value(&figures, "baseline.cpu") > 0.0);
    let cpu = find(&figures, "deliver.cpu").expect("deliver cpu");
    assert!(
        cpu.value > 0.0 && cpu.ratio.is_some_and(|r| r > 0.0),
        "{cpu:?}"
    );
}

#[test]
fn deliver_fans_out_to_every_webhook() {
    let options = Options {
        events: 300,
        webhooks: 3,
        ..Options::small("deliver")
    };
    let figures = run("deliver", options);
    assert_eq!(value(&figures, "deliver.delivered"), 900.0);
    // Per delivery, not per event (which would read 9 here).
    assert_eq!(value(&figures, "deliver.records_per_delivery"), 3.0);
    assert_eq!(value(&figures, "deliver.attempts_per_delivery"), 1.0);
}

#[test]
fn retry_refused_first_attempts_are_retried_until_all_are_delivered() {
    let figures = run("retry", Options::small("retry"));
    assert_eq!(value(&figures, "retry.delivered"), 1000.0);
    let attempts = value(&figures, "retry.attempts_per_delivery");
    let records = value(&figures, "retry.records_per_delivery");
    assert!(attempts > 1.0, "some first attempts fail: {attempts}");
    // Each refused attempt adds a `failed` and the retry's `attempted`.
    assert!(
        (records - (3.0 + 2.0 * (attempts - 1.0))).abs() < 1e-9,
        "{records} vs {attempts}"
    );
}

#[test]
fn disk_measures_bytes_per_delivery() {
    let figures = run("disk", Options::small("disk"));
    assert!(value(&figures, "disk.ledger_bytes_per_delivery") > 0.0);
    assert!(value(&figures, "disk.file_bytes_per_delivery") > 0.0);
    assert!(value(&figures, "disk.deliveries_per_link") >= 1.0);
}

/// The child: the `due` scenario alone, in a fresh process; prints its figures as JSON.
#[test]
#[ignore = "child-process helper of bench::due_picks_what_redrive_picks_and_measures_memory, which runs it"]
fn due_child() {
    std::env::var(CHILD_VAR).unwrap_or_else(|_| {
        panic!("a child-process helper, not a test: {CHILD_VAR} is set by the test that spawns it")
    });
    let figures = run("due", Options::small("due"));
    println!("{FIGURES}{}", serde_json::to_string(&figures).unwrap());
}

#[test]
fn due_picks_what_redrive_picks_and_measures_memory() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "bench::due_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_VAR, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let json = stdout
        .lines()
        .find_map(|l| l.split_once(FIGURES).map(|(_, json)| json))
        .unwrap_or_else(|| panic!("no figures in the child's output:\n{stdout}"));
    let figures: Vec<Value> = serde_json::from_str(json).unwrap();
    let value = |id: &str| {
        figures
            .iter()
            .find(|f| f["id"] == id)
            .and_then(|f| f["value"].as_f64())
            .unwrap_or_else(|| panic!("no figure {id} in {figures:#?}"))
    };
    // A full pass: the engine's default attempts in flight, none from a stalled webhook.
    let limit = EngineConfig::default().max_in_flight as f64;
    assert_eq!(value("due.taken"), limit);
    assert_eq!(value("due.taken_from_stalled"), 0.0);
    assert!(value("due.fair_10000") > 0.0);
    // Each pending delivery is held at least twice, its key (32 bytes) in the live map and
    // again in the due index: less growth than that means the memory was not measured.
    let bytes = value("due.bytes_per_pending");
    assert!(bytes >= 64.0, "{bytes} bytes per pending delivery");
}

#[test]
fn rebuild_folds_every_record_and_keeps_nothing_per_terminal_delivery() {
    let figures = run("rebuild", Options::small("rebuild"));
    assert_eq!(value(&figures, "rebuild.live_30000"), 0.0);
    let fold = find(&figures, "rebuild.fold_30000").expect("fold");
    assert!(fold.value > 0.0 && fold.ratio.is_some());
    assert!(value(&figures, "rebuild.fetch_30000") > 0.0);
}

#[test]
fn commit_measures_one_commit_and_group_commit() {
    let figures = run("commit", Options::small("commit"));
    assert!(value(&figures, "commit.p50") > 0.0);
    assert!(value(&figures, "commit.bulk_row") > 0.0);
    // Every transaction holds at least one commit, so only more than one shows group commit:
    // 256 publishers each waiting for its own commit queue up behind every transaction.
    let group = value(&figures, "commit.group_256_size");
    assert!(group > 1.0, "{group} commits per transaction");
}

/// `cluster` runs real `serve` children over HTTP: every delivery is attempted exactly once
/// across the nodes (the scenario fails otherwise), and on two nodes both take a share.
#[test]
fn cluster_delivers_through_serve_children_on_one_and_two_nodes() {
    let Some(server) =
        crate::pg_common::server("cluster_delivers_through_serve_children_on_one_and_two_nodes")
    else {
        return;
    };
    let options = Options {
        store: Some(server),
        exe: Some(env!("CARGO_BIN_EXE_hookledger").into()),
        ..Options::small("cluster")
    };
    let figures = run("cluster", options);
    for id in [
        "duck_rate",
        "pg1_rate",
        "pg2_rate",
        "duck_cpu",
        "pg1_cpu",
        "pg2_cpu",
    ] {
        assert!(value(&figures, &format!("cluster.{id}")) > 0.0, "{id}");
    }
    let pg1 = find(&figures, "cluster.pg1_rate").unwrap();
    let ratio = pg1.value / value(&figures, "cluster.duck_rate");
    assert!((pg1.ratio.unwrap() - ratio).abs() < 1e-9);
    let share = value(&figures, "cluster.pg2_share");
    assert!(share > 0.0 && share <= 0.5, "{share}");
    let without = bench::run(&Options::small("cluster"), &mut |_| {}).unwrap_err();
    assert!(without.to_string().contains("--store"), "{without}");
}

#[test]
fn sqlload_runs_the_heavy_query_beside_the_deliveries() {
    let figures = run("sqlload", Options::small("sqlload"));
    let ran = value(&figures, "sqlload.answered") + value(&figures, "sqlload.interrupted");
    assert!(ran >= 1.0, "{figures:#?}");
    let loaded = find(&figures, "sqlload.loaded").unwrap();
    let plain = value(&figures, "sqlload.plain");
    assert!((loaded.ratio.unwrap() - loaded.value / plain).abs() < 1e-9);
}

#[test]
fn an_unknown_scenario_is_refused() {
    let err = bench::run(&Options::small("nope"), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("unknown scenario"), "{err}");
}

#[test]
fn history_builds_two_ledgers_and_reports_each_figure_with_its_ratio() {
    let figures = run("history", Options::small("history"));
    for n in [31_000, 61_000] {
        for id in [
            "open",
            "open_full",
            "rss",
            "commit_p99",
            "pause",
            "plain_pause",
            "seal_pause",
            "state_at",
            "file",
        ] {
            assert!(
                value(&figures, &format!("history.{id}_{n}")) > 0.0,
                "{id} {n}"
            );
        }
        // The store turns DuckDB's row-group merging off, so no checkpoint merged a row: the
        // longest pause is the longest without a compaction.
        let merged = value(&figures, &format!("history.pause_merged_{n}"));
        assert_eq!(merged, 0.0, "DuckDB's vacuum merged {merged} rows at {n}");
        let pause = value(&figures, &format!("history.pause_{n}"));
        assert_eq!(pause, value(&figures, &format!("history.plain_pause_{n}")));
        let live = value(&figures, &format!("history.checkpoint_per_live_{n}"));
        assert!(
            live > 30.0 && live < 100.0,
            "checkpoint bytes per live delivery: {live}"
        );
        let tail = value(&figures, &format!("history.tail_{n}"));
        assert!(tail < n as f64 / 2.0, "the open folded {tail} of {n}");
    }
    for id in [
        "open",
        "commit_p99",
        "pause",
        "plain_pause",
        "seal_pause",
        "state_at",
        "rss",
    ] {
        let r = find(&figures, &format!("history.ratio_{id}")).expect("ratio");
        assert!(r.ratio.is_some_and(|x| x > 0.0), "{r:?}");
    }
}

#[test]
fn whatif_sees_every_generated_delivery_and_measures_itself_against_the_fold() {
    let figures = run("whatif", Options::small("whatif"));
    assert!(value(&figures, "whatif.deliveries_20000") > 5000.0);
    let rate = find(&figures, "whatif.rate_20000").expect("rate");
    assert!(rate.value > 0.0 && rate.ratio.is_some(), "{rate:?}");
    assert!(value(&figures, "whatif.fold_20000") > 0.0);
    assert!(value(&figures, "whatif.seconds_20000") > 0.0);
}

fn through_serve(scenario: &str, options: Options) -> Vec<Figure> {
    run(
        scenario,
        Options {
            exe: Some(env!("CARGO_BIN_EXE_hookledger").into()),
            ..options
        },
    )
}

/// `deliver-http` publishes to a `serve` child: the child has no input but its HTTP API, so
/// its own `/metrics` counting one attempt and three records per delivery, and its CPU, show
/// that the publishes arrived over HTTP (the scenario fails unless the receiver saw every
/// delivery too).
#[test]
fn deliver_http_delivers_every_event_published_over_http_to_a_serve_child() {
    let options = Options {
        events: 300,
        webhooks: 2,
        ..Options::small("deliver-http")
    };
    let figures = through_serve("deliver-http", options);
    assert_eq!(value(&figures, "deliver-http.delivered"), 600.0);
    assert_eq!(value(&figures, "deliver-http.attempts_per_delivery"), 1.0);
    assert_eq!(value(&figures, "deliver-http.records_per_delivery"), 3.0);
    assert!(value(&figures, "deliver-http.serve_cpu") > 0.0);
    let rate = find(&figures, "deliver-http.rate").unwrap();
    let base = value(&figures, "deliver-http.baseline");
    assert!(rate.value > 0.0 && base > 0.0, "{figures:#?}");
    assert!((rate.ratio.unwrap() - rate.value / base).abs() < 1e-9);
    let cpu = find(&figures, "deliver-http.cpu").unwrap();
    let per_post = value(&figures, "deliver-http.baseline_cpu");
    assert!((cpu.ratio.unwrap() - cpu.value / per_post).abs() < 1e-9);
    // The child's CPU is part of the whole.
    assert!(value(&figures, "deliver-http.serve_cpu") <= cpu.value);
    let (p50, p99) = (
        value(&figures, "deliver-http.p50"),
        value(&figures, "deliver-http.p99"),
    );
    assert!(p50 > 0.0 && p50 <= p99, "p50 {p50}, p99 {p99}");
}

#[test]
fn latency_paces_http_publishes_and_compares_them_with_a_one_row_commit() {
    let options = Options {
        rate: 200.0,
        seconds: 0.5,
        ..Options::small("latency")
    };
    let figures = through_serve("latency", options);
    assert_eq!(value(&figures, "latency.delivered"), 100.0);
    let [p50, p99, max, c50, c99, g50, g99] = [
        "p50",
        "p99",
        "max",
        "commit_p50",
        "commit_p99",
        "commit_paced_p50",
        "commit_paced_p99",
    ]
    .map(|id| value(&figures, &format!("latency.{id}")));
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= max, "{p50} {p99} {max}");
    assert!(c50 > 0.0 && c50 <= c99, "{c50} {c99}");
    assert!(g50 > 0.0 && g50 <= g99, "{g50} {g99}");
    // Nothing takes a minute when nothing failed.
    assert!(max < 60_000.0, "{max} ms");
    for (id, reference) in [
        ("p50", c50),
        ("p99", c99),
        ("p50_paced", g50),
        ("p99_paced", g99),
    ] {
        let f = find(&figures, &format!("latency.{id}")).unwrap();
        assert!(
            (f.ratio.unwrap() - f.value / reference).abs() < 1e-6,
            "{f:?}"
        );
    }
    // Paced, not a closed loop: the 100th publish starts 99 ticks (495 ms) after the first,
    // so the publishers cannot have gone faster than asked.
    let rate = find(&figures, "latency.rate").unwrap();
    assert!(
        rate.value > 0.0 && rate.value <= 200.0 * 100.0 / 99.0,
        "{rate:?}"
    );
    assert!((rate.ratio.unwrap() - rate.value / 200.0).abs() < 1e-9);
}

#[test]
fn bench_refuses_a_bad_rate_or_duration_naming_the_flag() {
    for (flag, bad) in [("--rate", "0"), ("--rate", "fast"), ("--seconds", "-1")] {
        let out = Command::new(env!("CARGO_BIN_EXE_hookledger"))
            .args(["bench", "--scenario", "latency", &format!("{flag}={bad}")])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {bad}: {err}");
        assert!(
            err.contains(flag) && err.contains(bad),
            "{flag} {bad}: {err}"
        );
    }
}
