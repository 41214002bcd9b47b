//! The surface every figure is drawn on: a PNG written whole or not at all, and the font.
//!
//! Text is drawn with a TrueType font read at run time (`JEPA_FONT`, else DejaVu Sans or
//! Liberation Sans from the usual Debian folders), so no font library is linked.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use jepa_eval::error::{ProbeError, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

pub(crate) const FONT_FAMILY: &str = "sans-serif";
const FONT_CANDIDATES: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers a font once per process.
pub(crate) fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let mut candidates: Vec<PathBuf> = std::env::var_os("JEPA_FONT").map(PathBuf::from).into_iter().collect();
            candidates.extend(FONT_CANDIDATES.iter().map(PathBuf::from));
            let Some(path) = candidates.iter().find(|path| path.exists()) else {
                return Err(format!(
                    "no TrueType font for the plots (looked at {}); install Debian's fonts-dejavu-core \
                     or set JEPA_FONT to a .ttf file",
                    candidates.iter().map(|path| path.display().to_string()).collect::<Vec<_>>().join(", ")
                ));
            };
            let bytes = std::fs::read(path).map_err(|error| format!("{}: {error}", path.display()))?;
            // plotters keeps fonts for the whole process; so does this one.
            plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
                .map_err(|_| format!("{}: not a TrueType font plotters can read", path.display()))
        })
        .clone()
        .map_err(|problem| ProbeError::bad(Path::new("plots"), problem))
}

/// Draws a PNG of `size` at `path` with `draw`, through a temporary file: a failed drawing
/// leaves nothing behind.
pub(crate) fn png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> std::result::Result<(), String>,
) -> Result<()> {
    jepa_shared::atomic::write_path(path, |temp| {
        let root = BitMapBackend::new(temp, size).into_drawing_area();
        draw(&root)
            .and_then(|()| root.present().map_err(|error| error.to_string()))
            .map_err(|problem| ProbeError::bad(path, problem))
    })
}
