//! `hookledger bench` at small sizes: every scenario completes and its counts add up. Speed is
//! reported by the command, never asserted here.

use hookledger::bench::{self, find, Figure, Options};

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
    assert_eq!(value(&figures, "deliver.records_per_delivery"), 3.0);
    assert_eq!(value(&figures, "deliver.attempts_per_delivery"), 1.0);
    assert!(value(&figures, "baseline.rate") > 0.0);
    let rate = find(&figures, "deliver.rate").expect("rate");
    assert!(rate.value > 0.0 && rate.ratio.is_some(), "{rate:?}");
    assert!(value(&figures, "deliver.half_p99") > 0.0);
    assert!(value(&figures, "deliver.commit_p50") > 0.0);
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
    assert_eq!(value(&figures, "deliver.records_per_delivery"), 3.0);
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

#[test]
fn due_takes_100_from_the_queue() {
    let figures = run("due", Options::small("due"));
    assert_eq!(value(&figures, "due.taken"), 100.0);
    assert!(value(&figures, "due.take_10000") > 0.0);
    assert!(value(&figures, "due.bytes_per_pending") >= 0.0);
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
    assert!(value(&figures, "commit.group_256_size") >= 1.0);
}

#[test]
fn an_unknown_scenario_is_refused() {
    let err = bench::run(&Options::small("nope"), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("unknown scenario"), "{err}");
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
