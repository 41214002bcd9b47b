//! The small run the trainer's tests start from: a nano ViT I-JEPA on a 16 px fixture
//! dataset, 5 optimizer steps an epoch over 40 images. Each test changes what it needs.

use std::path::Path;

pub const RUN: &str = r#"
name = "tiny"
seed = 3
dataset = "unset"

[loader]
batch_size = 8
workers = 1
prefetch_batches = 2
shuffle_buffer = 32

[encoder]
preset = "nano"
image_size_px = 16
patch_size_px = 4
channels = 3

[ijepa.masks]
num_targets = 2
min_keep = 2

[ijepa.predictor]
dim = 16
depth = 1
heads = 2

[optim]
epochs = 2
warmup_epochs = 1
lr_start = 1e-4
lr_peak = 1e-3
lr_final = 1e-5

[checkpoint]
every_steps = 3
keep = 5
"#;

/// [`RUN`] on the dataset at `dataset`, with each `key.path=value` of `changes` (the value
/// in TOML) set, as a config file's text.
#[allow(dead_code)]
pub fn run_config(dataset: &Path, changes: &[&str]) -> String {
    let mut table: toml::Table = RUN.parse().unwrap();
    table.insert("dataset".into(), dataset.display().to_string().into());
    for change in changes {
        let (path, value) = change.split_once('=').expect("key=value");
        let value = format!("value = {value}").parse::<toml::Table>().unwrap().remove("value").unwrap();
        let mut keys: Vec<&str> = path.split('.').collect();
        let last = keys.pop().unwrap();
        let mut section = &mut table;
        for key in keys {
            section = section.entry(key).or_insert_with(|| toml::Table::new().into()).as_table_mut().unwrap();
        }
        section.insert(last.into(), value);
    }
    toml::to_string(&table).unwrap()
}
