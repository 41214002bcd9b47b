//! `ingest`: command-line front of `jepa-ingest`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{ArgGroup, Args, Parser, Subcommand};
use jepa_ingest::download::{DownloadOptions, STL10_MD5, STL10_URL, fetch_stl10};
use jepa_ingest::fashion_mnist::{DEFAULT_DIR, FashionMnist};
use jepa_ingest::folder::{FolderOptions, ImageFolder};
use jepa_ingest::stl10::Stl10;
use jepa_ingest::{IngestOptions, IngestReport, Progress, Source, ingest};
use jepa_shared::{Dataset, ShardCodec, ShardLayout};

#[derive(Parser)]
#[command(name = "ingest", version, about = "Turn image sources into Parquet shards with a manifest")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// STL-10 binaries (train, test, unlabeled; labels 0..9; official folds kept)
    #[command(group(ArgGroup::new("source").required(true).args(["from", "download"])))]
    Stl10 {
        /// Folder holding stl10_binary/ (or its contents)
        #[arg(long)]
        from: Option<PathBuf>,
        /// Download and extract the official archive into <out>/raw/ first
        #[arg(long)]
        download: bool,
        /// Archive URL (a mirror)
        #[arg(long, default_value = STL10_URL, requires = "download")]
        url: String,
        /// Expected MD5 of the archive
        #[arg(long, default_value = STL10_MD5, requires = "download")]
        md5: String,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Fashion-MNIST IDX files (train 60k, test 10k)
    FashionMnist {
        #[arg(long, default_value = DEFAULT_DIR)]
        from: PathBuf,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// An image folder: <from>/<class>/<image>.{png,jpg}, or <from>/{train,val,test}/<class>/…
    Folder {
        #[arg(long)]
        from: PathBuf,
        /// Resize the shorter side to N px and centre-crop N×N (default: keep sizes)
        #[arg(long, value_name = "N")]
        size: Option<u16>,
        /// 3 for RGB, 1 for grey
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=3))]
        channels: u8,
        /// Fail on the first unreadable image instead of skipping it with a warning
        #[arg(long)]
        strict: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Check every shard of a dataset against the checksums in its manifest
    Verify {
        #[arg(long)]
        dataset: PathBuf,
    },
}

#[derive(Args)]
struct CommonArgs {
    /// Dataset folder to write, e.g. datasets/stl10
    #[arg(long)]
    out: PathBuf,
    /// Rewrite even when an up-to-date dataset is already there
    #[arg(long)]
    force: bool,
    /// Parquet page codec
    #[arg(long, default_value_t = ShardCodec::Lz4)]
    codec: ShardCodec,
    /// Images per row group
    #[arg(long, default_value_t = ShardLayout::default().rows_per_group)]
    rows_per_group: usize,
    /// Start a new shard file past this many MiB of pixels
    #[arg(long, default_value_t = ShardLayout::default().max_file_bytes >> 20)]
    max_file_mib: u64,
    /// No progress bars
    #[arg(long)]
    quiet: bool,
}

impl CommonArgs {
    fn options(&self) -> IngestOptions {
        IngestOptions {
            out: self.out.clone(),
            layout: ShardLayout {
                codec: self.codec,
                rows_per_group: self.rows_per_group,
                max_file_bytes: self.max_file_mib.max(1) << 20,
            },
            force: self.force,
        }
    }

    fn progress(&self) -> Progress {
        Progress::new(!self.quiet)
    }
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Stl10 { from, download, url, md5, common } => {
            let dir = match from {
                Some(dir) => dir,
                None => {
                    debug_assert!(download);
                    let raw = common.out.join("raw");
                    fetch_stl10(&raw, &url, &md5, &DownloadOptions::default(), &common.progress())
                        .with_context(|| format!("downloading STL-10 into {}", raw.display()))?
                }
            };
            run(&Stl10::open(&dir)?, &common)
        }
        Command::FashionMnist { from, common } => run(&FashionMnist::open(&from)?, &common),
        Command::Folder { from, size, channels, strict, common } => {
            let options = FolderOptions { size_px: size, channels, strict };
            run(&ImageFolder::open(&from, options, common.progress())?, &common)
        }
        Command::Verify { dataset } => {
            let verified = Dataset::open(&dataset)?.verify()?;
            println!(
                "{}: {} images in {} splits; their {} shard files match the manifest's rows and checksums",
                dataset.display(),
                verified.images,
                verified.splits,
                verified.files
            );
            Ok(())
        }
    }
}

fn run(source: &dyn Source, common: &CommonArgs) -> anyhow::Result<()> {
    let options = common.options();
    let report = ingest(source, &options, &common.progress())
        .with_context(|| format!("ingesting into {}", options.out.display()))?;
    print_report(&options.out, &report);
    Ok(())
}

fn print_report(out: &std::path::Path, report: &IngestReport) {
    if !report.written {
        println!(
            "{}: up to date with its source (sha256 {}); nothing to do (--force rewrites)",
            out.display(),
            &report.manifest.source.sha256[..12]
        );
        return;
    }
    println!(
        "{}: wrote {:.1} MB of pixels in {:.1} s ({:.0} MB/s)",
        out.display(),
        report.pixel_bytes as f64 / 1e6,
        report.elapsed.as_secs_f64(),
        report.megabytes_per_second()
    );
    for (name, split) in &report.manifest.splits {
        let bytes: u64 = split.files.iter().map(|file| file.bytes).sum();
        let mut line = format!(
            "  {name:>10}: {:>7} images in {} file(s), {:.1} MB",
            split.count,
            split.files.len(),
            bytes as f64 / 1e6
        );
        if split.skipped > 0 {
            line.push_str(&format!(", {} unreadable skipped", split.skipped));
        }
        if let Some(folds) = &split.folds {
            line.push_str(&format!(", {} folds", folds.len()));
        }
        println!("{line}");
    }
}
