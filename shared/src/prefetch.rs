//! The streaming prefetcher: shards in, ready batches out, the trainer never waiting.
//!
//! ```text
//!  reader thread ──job──> worker 0 ──result──┐
//!  (epoch order,   ──job──> worker 1 ──result──┼─> sequencer (tokio task) ─> bounded async channel ─> Loader
//!   row groups,      …                        ┘   (round-robin, in order)      (depth = prefetch)
//!   shuffle buffer)
//! ```
//!
//! - The **reader** ([`crate::epoch_reader`]) walks the epoch order, reads row groups as their images
//!   fall due, and cuts batch jobs; batch `k` goes to worker `k mod workers`.
//! - **Workers** are plain threads (CPU work never runs on the async reactor): crop, resize,
//!   channel-major layout and masks. Every random draw is keyed by (seed, epoch, sample
//!   position), so the same batch comes out whichever thread builds it.
//! - The **sequencer** takes results round-robin, so batches leave in order without a
//!   reorder buffer, and hands them to a bounded `async_channel`. Each worker holds at most one
//!   job and one result, so memory is bounded by the channel depth plus two batches per worker.
//!
//! Errors (a missing or corrupt shard, a panicking worker) travel the same path as batches and
//! reach the consumer in order, naming the file; the stream ends after the first one. Dropping
//! the [`Loader`] closes every channel and joins every thread.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use async_channel::{Receiver, Sender};

use crate::augment::{CropBox, ImagePipeline, SourceImage, random_resized_crop};
use crate::epoch_reader::{BatchJob, Job, Reader, SplitPlan};
use crate::loader::{Batch, LoaderConfig, LoaderError, LoaderPosition, LoaderStats, Result};
use crate::masks::MaskSampler;
use crate::reader::Dataset;
use crate::rng::KeyedRng;

/// The consumer end. Drop it to stop the stream: every thread is joined before drop returns.
pub struct Loader {
    output: Receiver<Result<Batch>>,
    shutdown: Shutdown,
    threads: Vec<JoinHandle<()>>,
    plan: Arc<SplitPlan>,
    config: LoaderConfig,
    position: LoaderPosition,
    stats: LoaderStats,
    last_delivery: Option<Instant>,
    built: Arc<AtomicUsize>,
}

impl Loader {
    /// Checks the config, the masks and the split, then starts the threads, streaming from
    /// `start` (use [`LoaderPosition::default`] for a fresh run).
    pub fn start(
        dataset: &Dataset,
        config: &LoaderConfig,
        masks: Arc<dyn MaskSampler>,
        start: LoaderPosition,
    ) -> Result<Self> {
        config.check(masks.grid())?;
        let plan = Arc::new(SplitPlan::new(dataset, config)?);
        if plan.usable_len() == 0 {
            return Err(LoaderError::Config {
                field: "batch_size",
                problem: format!(
                    "is {}, but split `{}` holds {} images, so drop_last leaves no batch",
                    config.settings.batch_size,
                    config.settings.split,
                    plan.order_len()
                ),
            });
        }

        let shutdown = Shutdown::default();
        let mut threads = Vec::with_capacity(config.settings.workers + 2);
        let built = Arc::new(AtomicUsize::new(0));
        let mut job_senders = Vec::with_capacity(config.settings.workers);
        let mut result_receivers = Vec::with_capacity(config.settings.workers);
        for worker in 0..config.settings.workers {
            // One job and one result in flight per worker: memory stays bounded.
            let (job_sender, job_receiver) = async_channel::bounded::<Job>(1);
            let (result_sender, result_receiver) = async_channel::bounded::<Message>(1);
            shutdown.watch(&job_receiver);
            shutdown.watch(&result_receiver);
            job_senders.push(job_sender);
            result_receivers.push(result_receiver);
            let context = WorkerContext {
                worker,
                config: config.clone(),
                masks: Arc::clone(&masks),
                plan: Arc::clone(&plan),
                built: Arc::clone(&built),
            };
            threads.push(spawn(format!("jepa-load-w{worker}"), move || context.run(job_receiver, result_sender)));
        }
        let (output_sender, output) = async_channel::bounded(config.settings.prefetch_batches);
        shutdown.watch(&output);

        let reader = Reader {
            config: config.clone(),
            plan: Arc::clone(&plan),
            start: plan.normalise(start),
            cancelled: Arc::clone(&shutdown.cancelled),
        };
        threads.push(spawn("jepa-load-read".into(), move || reader.run(job_senders)));
        let sequencer_shutdown = shutdown.clone();
        threads.push(spawn("jepa-load-seq".into(), move || {
            sequence(result_receivers, output_sender, sequencer_shutdown);
        }));

        Ok(Self {
            output,
            shutdown,
            threads,
            position: plan.normalise(start),
            plan,
            config: config.clone(),
            stats: LoaderStats::default(),
            last_delivery: None,
            built,
        })
    }

    /// The next batch; `None` once the configured epochs are done or after an error.
    pub async fn next(&mut self) -> Option<Result<Batch>> {
        let started = Instant::now();
        let received = self.output.recv().await.ok();
        self.delivered(started, received)
    }

    /// [`Loader::next`] for callers outside an async runtime.
    pub fn next_blocking(&mut self) -> Option<Result<Batch>> {
        let started = Instant::now();
        let received = self.output.recv_blocking().ok();
        self.delivered(started, received)
    }

    fn delivered(&mut self, started: Instant, received: Option<Result<Batch>>) -> Option<Result<Batch>> {
        let now = Instant::now();
        let waited = now - started;
        self.stats.waited += waited;
        metrics::histogram!("loader_wait_seconds").record(waited.as_secs_f64());
        metrics::gauge!("loader_batches_queued").set(self.output.len() as f64);
        if let Some(Ok(batch)) = &received {
            self.stats.batches += 1;
            self.stats.images += batch.len() as u64;
            metrics::counter!("loader_images_total").increment(batch.len() as u64);
            if let Some(previous) = self.last_delivery {
                let seconds = (now - previous).as_secs_f64();
                if seconds > 0.0 {
                    metrics::gauge!("loader_images_per_second").set(batch.len() as f64 / seconds);
                }
            }
            self.last_delivery = Some(now);
            let next = LoaderPosition { epoch: batch.epoch, sample: batch.next_position };
            self.position = self.plan.normalise(next);
        }
        received
    }

    /// Where a run that stops now resumes: the sample after the last batch delivered.
    pub fn position(&self) -> LoaderPosition {
        self.position
    }

    pub fn stats(&self) -> LoaderStats {
        self.stats
    }

    /// Ready batches waiting in the channel.
    pub fn queued(&self) -> usize {
        self.output.len()
    }

    /// Batches built by the workers and not yet delivered (queued, or waiting on their way).
    pub fn in_flight(&self) -> usize {
        self.built.load(Ordering::SeqCst).saturating_sub(self.stats.batches as usize)
    }

    /// Batches in one epoch, as configured (the last short one counts unless `drop_last`).
    pub fn batches_per_epoch(&self) -> u64 {
        self.plan.usable_len().div_ceil(self.config.settings.batch_size) as u64
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.shutdown.trigger();
        for thread in self.threads.drain(..) {
            // A thread that panicked already reported through its channel.
            let _ = thread.join();
        }
    }
}

fn spawn(name: String, body: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new().name(name).spawn(body).expect("the OS refused a loader thread")
}

struct WorkerContext {
    worker: usize,
    config: LoaderConfig,
    masks: Arc<dyn MaskSampler>,
    plan: Arc<SplitPlan>,
    built: Arc<AtomicUsize>,
}

/// Key stream for the crop draws, apart from the epoch order's and the masks'.
const CROP_STREAM: u64 = 0x4352_4f50; // "CROP"

impl WorkerContext {
    fn run(self, jobs: Receiver<Job>, results: Sender<Message>) {
        let mut pipeline = ImagePipeline::new(self.config.image_size_px, self.config.channels);
        while let Ok(job) = jobs.recv_blocking() {
            let message = match job {
                Job::End => Message::End,
                Job::Failed(error) => Message::Batch(Box::new(Err(error))),
                Job::Batch(job) => {
                    let (epoch, first_position) = (job.epoch, job.first_position);
                    let files = self.files_of(&job);
                    let built = catch_unwind(AssertUnwindSafe(|| self.build(&mut pipeline, job)));
                    Message::Batch(Box::new(built.unwrap_or_else(|payload| {
                        // The pipeline may be mid-write: start the next batch with a fresh one.
                        pipeline = ImagePipeline::new(self.config.image_size_px, self.config.channels);
                        Err(LoaderError::WorkerPanicked {
                            worker: self.worker,
                            epoch,
                            first_position,
                            files,
                            message: panic_message(payload.as_ref()),
                        })
                    })))
                }
            };
            if results.send_blocking(message).is_err() {
                return;
            }
        }
    }

    fn files_of(&self, job: &BatchJob) -> Vec<PathBuf> {
        let mut files: Vec<u32> = job.images.iter().map(|image| image.file).collect();
        files.sort_unstable();
        files.dedup();
        files.into_iter().map(|file| self.plan.paths[file as usize].clone()).collect()
    }

    fn build(&self, pipeline: &mut ImagePipeline, job: BatchJob) -> Result<Batch> {
        let config = &self.config;
        let rows = config.ranks.rows(job.images.len());
        let count = rows.len();
        let image_len = pipeline.output_len();
        let mut images = vec![0u8; config.views * count * image_len];
        let outputs = images.chunks_exact_mut(image_len).enumerate();
        for (slot, out) in outputs {
            let (view, offset) = (slot / count, slot % count);
            let row = rows.start + offset;
            let image = &job.images[row];
            let (height, width) = (u32::from(image.height), u32::from(image.width));
            let crop = if config.settings.crop.enabled {
                let position = job.first_position + row as u64;
                // The first view keeps the key of a one-view stream: adding views changes none of its crops.
                let mut rng = match view {
                    0 => KeyedRng::new(&[config.seed, job.epoch, position, CROP_STREAM]),
                    _ => KeyedRng::new(&[config.seed, job.epoch, position, CROP_STREAM, view as u64]),
                };
                random_resized_crop(&mut rng, height, width, &config.settings.crop)
            } else {
                CropBox::whole(height, width)
            };
            let source = SourceImage { height, width, channels: image.channels, pixels: &image.pixels };
            pipeline.process(source, crop, out).map_err(|problem| LoaderError::Image {
                path: self.plan.paths[image.file as usize].clone(),
                problem: format!("image id {}: {problem}", image.id),
            })?;
        }
        // Drawn for the whole global batch (contexts are cut to one length across it), then shared.
        let masks = self.masks.sample_batch(config.seed, job.epoch, job.first_position, job.images.len());
        let masks = masks.rows(rows.clone());
        self.built.fetch_add(1, Ordering::SeqCst);
        Ok(Batch {
            epoch: job.epoch,
            first_position: job.first_position + rows.start as u64,
            next_position: job.first_position + job.images.len() as u64,
            ids: job.images[rows.clone()].iter().map(|image| image.id).collect(),
            labels: job.images[rows].iter().map(|image| image.label).collect(),
            images,
            views: config.views,
            channels: config.channels as usize,
            image_size_px: config.image_size_px as usize,
            masks,
        })
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| text.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

enum Message {
    // Boxed: a batch's header is large beside `End`, and only a pointer crosses the channel.
    Batch(Box<Result<Batch>>),
    End,
}

/// Moves results to the output in batch order: batch `k` comes from worker `k mod workers`.
/// Runs a single-threaded tokio runtime on its own thread; it only awaits channels.
fn sequence(results: Vec<Receiver<Message>>, output: Sender<Result<Batch>>, shutdown: Shutdown) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a current-thread runtime");
    runtime.block_on(async {
        for turn in 0.. {
            let worker = turn % results.len();
            let received = results[worker].recv().await;
            let item = match received {
                Ok(Message::Batch(item)) => *item,
                Ok(Message::End) => break,
                Err(_) if shutdown.is_triggered() => break,
                Err(_) => {
                    // A worker thread ended without its result: say so rather than hang.
                    Err(LoaderError::WorkerDied { worker })
                }
            };
            let failed = item.is_err();
            if output.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    // End of stream: unblock the reader and the workers, and let the consumer see the end.
    shutdown.trigger();
}

type Closer = Box<dyn Fn() + Send>;

/// Closes every channel of one loader, so no thread stays blocked on a send or receive.
#[derive(Clone, Default)]
struct Shutdown {
    cancelled: Arc<AtomicBool>,
    closers: Arc<std::sync::Mutex<Vec<Closer>>>,
}

impl Shutdown {
    fn watch<T: Send + 'static>(&self, receiver: &Receiver<T>) {
        let receiver = receiver.clone();
        self.closers.lock().expect("closers lock").push(Box::new(move || {
            receiver.close();
        }));
    }

    fn trigger(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        for close in self.closers.lock().expect("closers lock").iter() {
            close();
        }
    }

    fn is_triggered(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}
