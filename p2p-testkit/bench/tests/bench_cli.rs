//! The p2p-bench binary end to end: a quick run writes complete JSON results that `compare`
//! reads back, and bad input is refused with a clear message.

use std::path::Path;
use std::process::{Command, Output};

fn bench(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p2p-bench"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("p2p-bench runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn quick_run_delivers_everything_and_compare_reads_its_results() {
    let dir = tempfile::tempdir().unwrap();
    let out = bench(
        &["--quick", "--only", "W1,W2,limits", "--out", "r/a.json"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r/a.json")).unwrap())
            .unwrap();
    let workloads = json["workloads"].as_array().unwrap();
    let names: Vec<&str> = workloads
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["W1", "W2"]);
    for w in workloads {
        assert_eq!(w["missing"], 0, "{w}");
        assert_eq!(w["duplicates"], 0, "{w}");
        assert!(w["full_delivery_s"].as_f64().is_some(), "{w}");
        assert!(w["amplification"].as_f64().unwrap() >= 1.0, "{w}");
    }
    assert!(json["limits"]["tls_bytes_per_s"].as_f64().unwrap() > 0.0);
    assert!(json["machine"]["cores"].as_u64().unwrap() > 0);
    assert!(text(&out).contains("[met   ] no artifact missing or delivered twice"));

    let cmp = bench(&["compare", "r/a.json", "r/a.json"], dir.path());
    assert!(cmp.status.success(), "{}", text(&cmp));
    let cmp = text(&cmp);
    let line = cmp
        .lines()
        .find(|l| l.starts_with("W2.amplification"))
        .unwrap_or_else(|| panic!("{cmp}"));
    assert!(line.contains("1.000  same"), "{line}");
}

#[test]
fn compare_refuses_a_file_that_is_not_a_result() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.json"), "[1, 2]").unwrap();
    let out = bench(&["compare", "x.json", "x.json"], dir.path());
    assert!(!out.status.success());
    assert!(
        text(&out).contains("x.json is not a p2p-bench result"),
        "{}",
        text(&out)
    );
}

#[test]
fn unknown_parts_and_out_of_range_block_sizes_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--only", "W9"][..],
        &["--block-size", "8"][..],
        &["--peers", "1"][..],
    ] {
        let out = bench(args, dir.path());
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    }
}

#[test]
fn a_partial_mesh_delivers_everything_through_relays() {
    let dir = tempfile::tempdir().unwrap();
    // 7 nodes of degree 2 (2 to 4 neighbours of 6): each node meshes with its neighbours and
    // the others' artifacts reach it through relays, in separate processes.
    let out = bench(
        &[
            "--custom",
            "name=mesh,nodes=7,small=14,small_size=300,large=2,large_size=300000,origins=2,spread_ms=100,timeout_s=20",
            "--peers",
            "2",
            "--out",
            "m.json",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("m.json")).unwrap()).unwrap();
    let w = &json["workloads"][0];
    assert_eq!(w["mode"], "process-per-node", "{w}");
    assert!(
        w["title"].as_str().unwrap().contains("2 peers per node"),
        "{w}"
    );
    assert_eq!(w["missing"], 0, "{w}");
    assert_eq!(w["duplicates"], 0, "{w}");
    assert!(w["full_delivery_s"].as_f64().is_some(), "{w}");
}
