//! `make test-faults`: what a careful user can do to a run folder, through the real `train`
//! binary, and what must survive it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

/// A scratch folder with a fixture dataset and the run config above pointing at it.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        jepa_shared::fixture::write_dataset(&dir.path().join("data"), 32, 3, 8, 2).unwrap();
        // Checkpoints every 2 steps, 2 kept, of a run long enough to interrupt.
        let changes = ["name=\"shared\"", "optim.epochs=400", "checkpoint.every_steps=2", "checkpoint.keep=2"];
        let config = common::run_config(&dir.path().join("data"), &changes);
        std::fs::write(dir.path().join("run.toml"), config).unwrap();
        Self { dir }
    }

    fn run(&self) -> PathBuf {
        self.dir.path().join("runs/shared")
    }

    fn train(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_train"));
        command.current_dir(self.dir.path()).args(["--device", "cpu", "--quiet"]).args(args);
        command.env_remove("RUST_BACKTRACE");
        command
    }

    fn start(&self, args: &[&str]) -> Child {
        self.train(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    }

    fn fresh(&self) -> [&'static str; 4] {
        ["--config", "run.toml", "--runs", "runs"]
    }

    /// A fresh run's arguments with each of `sets` as a `--set`.
    fn fresh_with<'a>(&self, sets: &[&'a str]) -> Vec<&'a str> {
        let mut args = self.fresh().to_vec();
        for set in sets {
            args.extend(["--set", set]);
        }
        args
    }
}

/// Waits until `child` has written its first checkpoint, so it is well inside its run.
fn wait_for_checkpoint(run: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !run.join("checkpoints/step-00000002/state.json").exists() {
        assert!(child.try_wait().unwrap().is_none(), "the first writer ended before its first checkpoint");
        assert!(Instant::now() < deadline, "no checkpoint after 120 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Every checkpoint under its final name has every file a resume needs (a killed writer's
/// staging folder aside: the next writer clears it).
fn assert_complete_checkpoints(run: &Path) {
    let mut found = 0;
    for entry in std::fs::read_dir(run.join("checkpoints")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if jepa_shared::atomic::is_temp_name(&name) {
            continue;
        }
        assert!(name.starts_with("step-"), "{name} in checkpoints/");
        for file in ["model.bin", "target_encoder.bin", "optimizer.bin", "state.json", "digests.json"] {
            assert!(path.join(file).is_file(), "{}: no {file}", path.display());
        }
        found += 1;
    }
    assert!(found > 0, "no checkpoint in {}", run.display());
}

#[test]
fn a_second_writer_is_refused_and_the_first_run_survives() {
    let scratch = Scratch::new();
    let run = scratch.run();
    let mut first = scratch.start(&scratch.fresh());
    wait_for_checkpoint(&run, &mut first);
    let config_before = std::fs::read_to_string(run.join("config.toml")).unwrap();

    // The same run started again, and resumed with another learning rate, while it trains.
    let again = scratch.train(&scratch.fresh()).output().unwrap();
    let resumed = scratch.train(&["--resume", "runs/shared", "--set", "optim.lr_peak=5e-3"]).output().unwrap();
    let pid = first.id().to_string();
    for (what, output) in [("a second fresh start", &again), ("a resume", &resumed)] {
        let message = stderr(output);
        assert!(!output.status.success(), "{what} ran beside the first writer: {message}");
        assert!(
            message.contains("is writing this run") && message.contains(&format!("process {pid}")),
            "{what} does not name the writer: {message}"
        );
    }
    assert_eq!(std::fs::read_to_string(run.join("config.toml")).unwrap(), config_before, "config.toml rewritten");

    // The first writer, killed mid-run, leaves checkpoints that resume.
    first.kill().unwrap();
    first.wait().unwrap();
    assert_complete_checkpoints(&run);
    let resume = scratch.train(&["--resume", "runs/shared", "--set", "optim.max_steps=3"]).output().unwrap();
    assert!(resume.status.success(), "{}", stderr(&resume));
    assert_no_staging(&run);
}

/// Nothing staged is left in the run's checkpoints.
fn assert_no_staging(run: &Path) {
    for entry in std::fs::read_dir(run.join("checkpoints")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!jepa_shared::atomic::is_temp_name(&name), "{name} left in checkpoints/");
    }
}

#[test]
fn a_checkpoint_a_killed_writer_was_staging_is_cleared_by_the_next() {
    let scratch = Scratch::new();
    let run = scratch.run();
    let short =
        scratch.train(&["--config", "run.toml", "--runs", "runs", "--set", "optim.max_steps=2"]).output().unwrap();
    assert!(short.status.success(), "{}", stderr(&short));
    // What a writer killed while saving step 4 leaves, under its own process's name.
    let staged = run.join("checkpoints/step-00000004.tmp-999999");
    std::fs::create_dir_all(&staged).unwrap();
    std::fs::write(staged.join("optimizer.bin"), b"half").unwrap();
    let resumed = scratch.train(&["--resume", "runs/shared", "--set", "optim.max_steps=4"]).output().unwrap();
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(!staged.exists(), "the staged checkpoint is still there");
    assert_no_staging(&run);
    assert_complete_checkpoints(&run);
}

#[test]
fn a_refused_first_start_leaves_no_run_folder() {
    let scratch = Scratch::new();
    // A dataset that is not there: refused before anything is written.
    let output =
        scratch.train(&["--config", "run.toml", "--runs", "runs", "--set", "dataset=\"nowhere\""]).output().unwrap();
    assert!(!output.status.success());
    assert!(!scratch.run().exists(), "{} left behind: {}", scratch.run().display(), stderr(&output));
}

/// Trains the shared run to step 6 (checkpoints at 4 and 6 kept), then damages step 6's
/// `model.bin` with `damage`, and checks that neither resume nor the probe's loading trusts
/// it, that the message names the file and the newest good checkpoint, and that resuming
/// from that one works.
fn damaged_checkpoint_is_refused(damage: impl FnOnce(&Path)) {
    let scratch = Scratch::new();
    let run = scratch.run();
    let trained =
        scratch.train(&["--config", "run.toml", "--runs", "runs", "--set", "optim.max_steps=6"]).output().unwrap();
    assert!(trained.status.success(), "{}", stderr(&trained));
    let model = run.join("checkpoints/step-00000006/model.bin");
    damage(&model);

    let resumed = scratch.train(&["--resume", "runs/shared", "--set", "optim.max_steps=8"]).output().unwrap();
    let message = stderr(&resumed);
    assert!(!resumed.status.success(), "resumed from a damaged checkpoint: {message}");
    assert!(
        message.contains("checkpoints/step-00000006/model.bin") && message.contains("--from step-00000004"),
        "the message names neither the file nor the good checkpoint: {message}"
    );
    // The probe's loading refuses it too, naming the file.
    let opened = jepa_trainer::Run::open(&run).unwrap();
    let error = opened.checkpoint(None).unwrap_err().to_string();
    assert!(error.contains("model.bin") && error.contains("damaged"), "{error}");

    let from = scratch
        .train(&["--resume", "runs/shared", "--from", "step-00000004", "--set", "optim.max_steps=8"])
        .output()
        .unwrap();
    assert!(from.status.success(), "{}", stderr(&from));
    assert_complete_checkpoints(&run);
}

#[test]
fn a_checkpoint_with_flipped_bytes_is_refused_and_the_previous_one_offered() {
    damaged_checkpoint_is_refused(|model| {
        let mut bytes = std::fs::read(model).unwrap();
        let middle = bytes.len() / 2;
        for byte in &mut bytes[middle..middle + 400] {
            *byte ^= 0x5a;
        }
        std::fs::write(model, bytes).unwrap();
    });
}

#[test]
fn a_truncated_checkpoint_is_refused_and_the_previous_one_offered() {
    damaged_checkpoint_is_refused(|model| {
        let bytes = std::fs::read(model).unwrap();
        std::fs::write(model, &bytes[..bytes.len() / 3]).unwrap();
    });
}

#[test]
fn a_learning_rate_past_f32_is_refused_before_any_work() {
    let scratch = Scratch::new();
    let output =
        scratch.train(&["--config", "run.toml", "--runs", "runs", "--set", "optim.lr_peak=1e300"]).output().unwrap();
    let message = stderr(&output);
    assert!(!output.status.success(), "trained at 1e300: {message}");
    assert!(message.contains("optim.lr_peak") && message.contains("f32"), "{message}");
    assert!(!scratch.run().exists(), "{} left behind", scratch.run().display());
}

#[test]
fn overflowed_weights_are_never_saved() {
    let scratch = Scratch::new();
    // Each setting fits f32, but the first update's weight decay (1 - lr × decay = -1e40)
    // overflows the weights, while that step's loss, computed before it, is finite.
    let sets = [
        "optim.lr_start=1e10",
        "optim.lr_peak=1e10",
        "optim.warmup_epochs=0",
        "optim.weight_decay=[1e30, 1e30]",
        "checkpoint.every_steps=1",
    ];
    let output = scratch.train(&scratch.fresh_with(&sets)).output().unwrap();
    let message = stderr(&output);
    assert!(!output.status.success(), "{message}");
    assert!(
        message.contains("parameter values are not finite") && message.contains("the last good checkpoint is (none)"),
        "{message}"
    );
    let checkpoints = scratch.run().join("checkpoints");
    let saved = std::fs::read_dir(&checkpoints).map(|entries| entries.count()).unwrap_or(0);
    assert_eq!(saved, 0, "a checkpoint of overflowed weights was written");
}

#[test]
fn a_resume_that_would_change_the_run_is_refused_naming_the_field() {
    let scratch = Scratch::new();
    let run = scratch.run();
    let trained =
        scratch.train(&["--config", "run.toml", "--runs", "runs", "--set", "optim.max_steps=2"]).output().unwrap();
    assert!(trained.status.success(), "{}", stderr(&trained));
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    for (set, field) in [
        ("method=\"mae\"", "method"),
        ("encoder.preset=\"micro\"", "encoder.preset"),
        ("seed=7", "seed"),
        ("ijepa.predictor.depth=2", "ijepa.predictor.depth"),
    ] {
        let output =
            scratch.train(&["--resume", "runs/shared", "--set", set, "--set", "optim.max_steps=4"]).output().unwrap();
        let message = stderr(&output);
        assert!(!output.status.success(), "resumed with {set}: {message}");
        assert!(message.contains(&format!("started with {field} = ")), "{set}: {message}");
        assert!(!message.contains("panicked"), "{set}: {message}");
        assert_eq!(std::fs::read_to_string(run.join("config.toml")).unwrap(), config, "{set} rewrote config.toml");
    }
    // What may change does.
    let more = scratch
        .train(&["--resume", "runs/shared", "--set", "optim.max_steps=4", "--set", "checkpoint.keep=3"])
        .output()
        .unwrap();
    assert!(more.status.success(), "{}", stderr(&more));
}

#[test]
fn sigint_stops_at_a_step_boundary_with_a_checkpoint_a_log_line_and_status_130() {
    let scratch = Scratch::new();
    let run = scratch.run();
    let mut child =
        scratch.start(&["--config", "run.toml", "--runs", "runs", "--set", "checkpoint.every_steps=100000"]);
    // Inside its training loop once its lock names it and its first steps are in the log.
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(run.join("writer.lock")).map_or(true, |holder| holder.is_empty())
        || !run.join("train.log").exists()
    {
        assert!(child.try_wait().unwrap().is_none() && Instant::now() < deadline, "the run did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let sent = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let output = child.wait_with_output().unwrap();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(130), "{message}");
    let step: u64 = message
        .split("interrupted after step ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|step| step.parse().ok())
        .unwrap_or_else(|| panic!("no step in: {message}"));
    assert!(step >= 1, "{message}");
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert!(log.lines().last().unwrap().contains(&format!("interrupted after step {step}")), "{log}");
    assert!(run.join(format!("checkpoints/step-{step:08}/digests.json")).is_file(), "no checkpoint at step {step}");
    assert_complete_checkpoints(&run);

    let max_steps = format!("optim.max_steps={}", step + 2);
    let resumed = scratch.train(&["--resume", "runs/shared", "--set", &max_steps]).output().unwrap();
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert!(log.contains(&format!("resumed at step {step} of {}", step + 2)), "{log}");
}

#[test]
fn a_new_run_stopped_by_a_damaged_shard_leaves_no_folder() {
    let scratch = Scratch::new();
    let dataset = jepa_shared::Dataset::open(&scratch.dir.path().join("data")).unwrap();
    let shard = &dataset.shard_path(dataset.split("train").unwrap().files.last().expect("a shard"));
    let mut bytes = std::fs::read(shard).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(shard, bytes).unwrap();
    // Pixel statistics given, so the shards are first read by the loader, after the run's
    // config and log are written; its only checkpoint would be at the end.
    let sets = [
        "optim.max_steps=8",
        "checkpoint.every_steps=1000",
        "data.pixel_mean=[0.5, 0.5, 0.5]",
        "data.pixel_std=[0.25, 0.25, 0.25]",
    ];
    let output = scratch.train(&scratch.fresh_with(&sets)).output().unwrap();
    let message = stderr(&output);
    assert!(!output.status.success() && message.contains("checksum mismatch"), "{message}");
    assert!(!scratch.run().exists(), "{} left behind: {message}", scratch.run().display());
}

#[test]
fn a_reader_pins_one_checkpoint_that_pruning_leaves_until_it_ends() {
    let scratch = Scratch::new();
    let run = scratch.run();
    let first =
        scratch.train(&["--config", "run.toml", "--runs", "runs", "--set", "optim.max_steps=2"]).output().unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    let mut reader = jepa_trainer::Run::open(&run).unwrap();
    reader.pin_latest().unwrap();
    let pinned = reader.checkpoint(None).unwrap();
    assert_eq!(pinned.step(), Some(2));

    // The run trains on, keeping 2 checkpoints: step 2 would be pruned at step 6.
    let more = scratch.train(&["--resume", "runs/shared", "--set", "optim.max_steps=8"]).output().unwrap();
    assert!(more.status.success(), "{}", stderr(&more));
    assert!(pinned.path().join("model.bin").is_file(), "the pinned checkpoint was pruned under its reader");
    assert_eq!(reader.checkpoint(None).unwrap(), pinned, "the reader's latest moved");
    assert_eq!(jepa_trainer::Run::open(&run).unwrap().checkpoint(None).unwrap().step(), Some(8));

    // Once the reader ends, the next checkpoint prunes it.
    drop(reader);
    let last = scratch.train(&["--resume", "runs/shared", "--set", "optim.max_steps=10"]).output().unwrap();
    assert!(last.status.success(), "{}", stderr(&last));
    assert!(!pinned.path().exists(), "step 2 outlived its reader");
}

#[test]
fn smaller_mistakes_get_a_message_that_says_what_to_do() {
    let scratch = Scratch::new();
    let refused = |args: &[&str], expected: &[&str]| {
        let output = scratch.train(args).output().unwrap();
        let message = stderr(&output);
        assert!(!output.status.success(), "{args:?} ran: {message}");
        for words in expected {
            assert!(message.contains(words), "{args:?}: `{words}` missing from: {message}");
        }
        assert!(!message.contains("panicked") && !scratch.run().exists(), "{args:?}: {message}");
    };
    // A bad value on the command line is blamed on the command line, not on the file.
    refused(&scratch.fresh_with(&["optim.lr_peak=fast"]), &["--set optim.lr_peak=fast", "expected f64"]);
    // A misspelt section is named, with the one it was meant to be.
    let typo = std::fs::read_to_string(scratch.dir.path().join("run.toml")).unwrap().replace("[optim]", "[optimizer]");
    std::fs::write(scratch.dir.path().join("typo.toml"), typo).unwrap();
    refused(&["--config", "typo.toml", "--runs", "runs"], &["typo.toml", "`[optimizer]`", "did you mean `[optim]`?"]);
    // A relative dataset path, run from another folder than the one it is relative to.
    let elsewhere = scratch.dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let output = scratch
        .train(&["--config", "../run.toml", "--runs", "../runs", "--set", "dataset=\"data\""])
        .current_dir(&elsewhere)
        .output()
        .unwrap();
    let message = stderr(&output);
    assert!(!output.status.success(), "{message}");
    assert!(
        message.contains("the relative path `data` is read from the current folder")
            && message.contains(&*elsewhere.to_string_lossy()),
        "{message}"
    );
    assert!(!scratch.run().exists(), "{message}");
}

#[test]
fn masks_that_can_only_be_drawn_overlapping_their_targets_are_warned_about() {
    let scratch = Scratch::new();
    // 40 target blocks on a 7×7 patch grid leave the context almost nothing of its own.
    let sets = ["encoder.image_size_px=28", "optim.max_steps=1", "ijepa.masks.num_targets=40"];
    let output = scratch.train(&scratch.fresh_with(&sets)).output().unwrap();
    let message = stderr(&output);
    assert!(output.status.success(), "{message}");
    assert!(message.contains("warning: run.toml: `ijepa.masks`") && message.contains("7×7 patch grid"), "{message}");
    // The settings the run ships with draw their masks as configured, and say nothing.
    let output = scratch.train(&scratch.fresh_with(&["optim.max_steps=1", "name=\"plain\""])).output().unwrap();
    assert!(output.status.success() && !stderr(&output).contains("warning"), "{}", stderr(&output));
}
