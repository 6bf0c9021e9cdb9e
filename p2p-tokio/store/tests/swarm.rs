//! Chunked artifacts assembled in files behave exactly as in memory: the simulator's swarm
//! scenarios, run with each node's `Config::storage` a [`FileStorage`], give the same outputs.

use std::path::PathBuf;
use std::sync::Arc;

use p2p_core::StorageRef;
use p2p_store::FileStorage;
use p2p_testkit::sim::named;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("p2p-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn swarms_in_files_deliver_what_swarms_in_memory_do_with_the_same_outputs() {
    for scenario in ["swarm-4m-13", "swarm-origin-crash"] {
        let dir = scratch(scenario);
        let files = Arc::new(FileStorage::new(&dir).unwrap());
        let in_memory = named(scenario, 0).expect("exists").run();
        let shared = files.clone();
        let in_files = named(scenario, 0)
            .expect("exists")
            .config(move |c| c.storage = StorageRef(shared.clone()))
            .run();
        in_files.assert_passed();
        assert!(in_files.expected > 0);
        assert_eq!(in_files.delivered, in_files.expected, "{in_files}");
        assert_eq!(
            in_files.output_hash, in_memory.output_hash,
            "{scenario}: every output of every node, at the same time"
        );
        assert_eq!(files.fallbacks(), 0, "{:?}", files.last_error());
        // Every receiver assembled each artifact in a file (a crashed origin's partial
        // holders too).
        let receivers = (in_files.nodes - 1) as u64;
        assert!(files.mapped() >= receivers, "{} files", files.mapped());
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "no file is left with a name"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
