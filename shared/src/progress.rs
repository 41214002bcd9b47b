//! One progress-bar style for every long step of every stage: ingest, training, feature
//! extraction, fine-tuning. Bars draw only on a terminal (indicatif hides them otherwise)
//! and can be turned off altogether for tests and scripts.

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Clone, Copy)]
pub struct Progress {
    enabled: bool,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        Self { enabled }
    }

    pub fn hidden() -> Self {
        Self { enabled: false }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// A bar counting `unit`s (images, steps); `set_message` adds a note after the count.
    pub fn bar(&self, total: u64, label: &str, unit: &str) -> ProgressBar {
        let template = format!("{{prefix:>24}} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit} {{msg}} eta {{eta}}");
        self.styled(total, label, &template)
    }

    /// A bar counting bytes (downloads, checksums).
    pub fn bytes(&self, total: u64, label: &str) -> ProgressBar {
        self.styled(total, label, "{prefix:>24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
    }

    fn styled(&self, total: u64, label: &str, template: &str) -> ProgressBar {
        if !self.enabled {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total);
        bar.set_style(ProgressStyle::with_template(template).expect("a valid template").progress_chars("=> "));
        bar.set_prefix(label.to_string());
        bar
    }

    /// Prints a warning without tearing a bar that is being drawn.
    pub fn warn(&self, message: &str) {
        eprintln!("warning: {message}");
    }
}
