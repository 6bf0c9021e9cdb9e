//! The p2p-bench binary end to end: a quick run writes complete JSON results that `compare`
//! reads back and the pictures of its workloads, and bad input is refused with a clear message.

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
        &[
            "--quick",
            "--only",
            "W1,W2,limits",
            "--out",
            "r/a.json",
            "--report",
            "pics",
            "--bound",
            "W2=0.5",
        ],
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
    pictures_are_written(&dir.path().join("pics"));

    let cmp = bench(&["compare", "r/a.json", "r/a.json"], dir.path());
    assert!(cmp.status.success(), "{}", text(&cmp));
    let cmp = text(&cmp);
    let line = cmp
        .lines()
        .find(|l| l.starts_with("W2.amplification"))
        .unwrap_or_else(|| panic!("{cmp}"));
    assert!(line.contains("1.000  same"), "{line}");
}

/// The pictures of the quick W1 and W2 with `--report`: the page and three SVGs each, every one
/// well-formed and showing its series.
fn pictures_are_written(dir: &Path) {
    let read = |name: &str| {
        let path = dir.join(name);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(text.len() > 2_000, "{name} is {} bytes", text.len());
        text
    };
    let page = read("report.html");
    for w in ["W1", "W2"] {
        for part in ["latency", "progress", "traffic"] {
            let name = format!("{w}-{part}.svg");
            let svg = read(&name);
            roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(page.contains(&svg), "{name} is inline in the page");
        }
    }
    assert!(read("W1-latency.svg").contains("urgent (600 deliveries)"));
    assert!(read("W2-latency.svg").contains("bulk (12 deliveries)"));
    let progress = read("W2-progress.svg");
    for label in [
        "expected total (12.6 MB)",
        "link bound (0.500 s)",
        "CPU bound: rustls on",
    ] {
        assert!(progress.contains(label), "{label}");
    }
    assert!(
        !read("W1-progress.svg").contains("link bound"),
        "W2's bound only"
    );
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
            "--report",
            "pics",
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
    // The pictures of a process-per-node run: the deliveries the node processes reported,
    // and every node's socket bytes both ways.
    let pics = dir.path().join("pics");
    let latency = std::fs::read_to_string(pics.join("mesh-latency.svg")).unwrap();
    assert!(latency.contains("urgent (84 deliveries)"), "{latency}");
    assert!(latency.contains("bulk (12 deliveries)"), "{latency}");
    let traffic = std::fs::read_to_string(pics.join("mesh-traffic.svg")).unwrap();
    let doc = roxmltree::Document::parse(&traffic).unwrap();
    for (fill, what) in [("#D62728", "written"), ("#1F77B4", "read")] {
        let heights: Vec<f64> = doc
            .descendants()
            .filter(|n| n.has_tag_name("rect") && n.attribute("fill") == Some(fill))
            .map(|n| n.attribute("height").unwrap().parse().unwrap())
            .collect();
        assert_eq!(heights.len(), 8, "{what}: 7 nodes and the legend's mark");
        assert!(heights.iter().all(|&h| h > 0.0), "{what}: {heights:?}");
    }
}
