//! Dropping the loader stops and joins every thread it started. Alone in its test binary,
//! so no other test's loader threads are counted.

mod common;

use common::{config, small_masks, write_dataset};
use jepa_shared::{Loader, LoaderConfig, LoaderPosition};

/// Threads of this process whose name starts with the loader's prefix.
fn loader_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.unwrap().path().join("comm")).ok())
        .filter(|name| name.starts_with("jepa-load"))
        .count()
}

#[test]
fn dropping_the_loader_mid_epoch_joins_every_thread() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = write_dataset(dir.path(), 400, 3, 20, 2);
    assert_eq!(loader_threads(), 0);

    // Rejected configs start nothing.
    assert!(
        Loader::start(
            &dataset,
            &LoaderConfig { channels: 2, ..config(4, 1) },
            small_masks(),
            LoaderPosition::default()
        )
        .is_err()
    );
    assert_eq!(loader_threads(), 0);

    for workers in [1, 3] {
        // Endless epochs and a full queue: every thread is blocked somewhere when we drop.
        let mut loader_config = LoaderConfig { epochs: None, ..config(4, 1) };
        loader_config.settings.workers = workers;
        let mut loader = Loader::start(&dataset, &loader_config, small_masks(), LoaderPosition::default()).unwrap();
        loader.next_blocking().unwrap().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(loader_threads(), workers + 2, "reader, sequencer and {workers} workers");
        drop(loader);
        assert_eq!(loader_threads(), 0, "threads left after drop");
    }

    // A stream that ended by itself also leaves nothing behind once dropped.
    let mut loader = Loader::start(&dataset, &config(100, 1), small_masks(), LoaderPosition::default()).unwrap();
    while loader.next_blocking().is_some() {}
    drop(loader);
    assert_eq!(loader_threads(), 0);
}
