//! Figures made of images: a sheet of pictures in rows and columns, drawn larger (nearest
//! neighbour) on white, with a title, a title over each column, coloured outlines on the
//! pictures and a legend of colour swatches. The reconstruction, predictor-retrieval and
//! mask figures are sheets. Written whole or not at all, like every plot.

use std::path::Path;

use jepa_eval::error::{ProbeError, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::canvas::{FONT_FAMILY, ensure_font, png};

/// Space between pictures, in pixels.
const GAP_PX: usize = 8;
const TITLE_PX: usize = 22;
const COLUMN_TITLE_PX: usize = 16;
const LEGEND_PX: usize = 16;
/// A generous width per character, where the font cannot measure a text.
const CHAR_WIDTH: f64 = 0.62;
/// Width of an outline, in sheet pixels.
const OUTLINE_PX: usize = 2;

/// One colour per target block, the same in every figure (never green, the context's).
pub fn block_colour(block: usize) -> [u8; 3] {
    const COLOURS: [[u8; 3]; 4] = [[230, 60, 60], [40, 110, 230], [250, 170, 30], [190, 80, 220]];
    COLOURS[block % COLOURS.len()]
}

/// One picture: `width × height` RGB pixels, row-major, and outlines drawn over it.
#[derive(Debug, Clone, PartialEq)]
pub struct Picture {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<[u8; 3]>,
    pub outlines: Vec<Outline>,
}

impl Picture {
    pub fn new(width: usize, height: usize, pixels: Vec<[u8; 3]>) -> Self {
        Self { width, height, pixels, outlines: Vec::new() }
    }

    /// Image `pixels` (`[channels, size, size]`, one or three channels) as RGB.
    pub fn from_planes(pixels: &[u8], size: usize, channels: usize) -> Self {
        let plane = size * size;
        let rgb =
            (0..plane)
                .map(|at| {
                    if channels == 1 {
                        [pixels[at]; 3]
                    } else {
                        [pixels[at], pixels[plane + at], pixels[2 * plane + at]]
                    }
                })
                .collect();
        Self::new(size, size, rgb)
    }

    /// The square patch `patch` (row-major on a grid of `patch_px` patches) set to `colour`.
    pub fn fill_patch(&mut self, patch: usize, patch_px: usize, colour: [u8; 3]) {
        for (x, y) in patch_pixels(patch, patch_px, self.width) {
            self.pixels[y * self.width + x] = colour;
        }
    }

    /// Patch `patch` blended with `colour` (`amount` 0: unchanged, 1: the colour).
    pub fn tint_patch(&mut self, patch: usize, patch_px: usize, colour: [u8; 3], amount: f32) {
        for (x, y) in patch_pixels(patch, patch_px, self.width) {
            let pixel = &mut self.pixels[y * self.width + x];
            for channel in 0..3 {
                let mixed = f32::from(pixel[channel]) * (1.0 - amount) + f32::from(colour[channel]) * amount;
                pixel[channel] = mixed.round() as u8;
            }
        }
    }

    /// Patch `patch` of this picture replaced by patch `from_patch` of `source` (same size).
    pub fn copy_patch(&mut self, patch: usize, source: &Picture, from_patch: usize, patch_px: usize) {
        let into = patch_pixels(patch, patch_px, self.width);
        let from = patch_pixels(from_patch, patch_px, source.width);
        for ((x, y), (source_x, source_y)) in into.zip(from) {
            self.pixels[y * self.width + x] = source.pixels[source_y * source.width + source_x];
        }
    }
}

/// `(x, y)` of every pixel of patch `patch` on a picture `width` pixels wide.
fn patch_pixels(patch: usize, patch_px: usize, width: usize) -> impl Iterator<Item = (usize, usize)> {
    let grid = width / patch_px;
    let (left, top) = ((patch % grid) * patch_px, (patch / grid) * patch_px);
    (0..patch_px).flat_map(move |dy| (0..patch_px).map(move |dx| (left + dx, top + dy)))
}

/// A rectangle outlined on a picture, in its own pixels: `[left, top]` to `[right, bottom]`
/// exclusive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outline {
    pub left: usize,
    pub top: usize,
    pub right: usize,
    pub bottom: usize,
    pub colour: [u8; 3],
}

impl Outline {
    /// The smallest rectangle around `patches` of a grid `grid` patches wide.
    pub fn around(patches: &[u32], grid: usize, patch_px: usize, colour: [u8; 3]) -> Option<Self> {
        let columns = patches.iter().map(|&patch| patch as usize % grid);
        let rows = patches.iter().map(|&patch| patch as usize / grid);
        Some(Self {
            left: columns.clone().min()? * patch_px,
            right: (columns.max()? + 1) * patch_px,
            top: rows.clone().min()? * patch_px,
            bottom: (rows.max()? + 1) * patch_px,
            colour,
        })
    }
}

/// A figure of pictures.
#[derive(Debug, Clone, Default)]
pub struct Sheet {
    /// One line per line of text, centred over the pictures.
    pub title: Option<String>,
    /// One title per column (fewer or none leave the rest untitled).
    pub column_titles: Vec<String>,
    pub rows: Vec<Vec<Picture>>,
    /// Colour swatches and what they mean, under the pictures.
    pub legend: Vec<(String, [u8; 3])>,
    /// Each picture drawn this many times larger.
    pub scale: usize,
}

impl Sheet {
    /// Draws the sheet into `path` (PNG).
    pub fn draw(&self, path: &Path) -> Result<()> {
        let scale = self.scale.max(1);
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        if columns == 0 {
            return Err(ProbeError::bad(path, "nothing to draw: no pictures"));
        }
        ensure_font()?;
        let column_width = self.rows.iter().flatten().map(|picture| picture.width * scale).max().unwrap_or(0);
        let row_height = self.rows.iter().flatten().map(|picture| picture.height * scale).max().unwrap_or(0);
        // The font's own measure of the text; a generous estimate if it cannot say.
        let text_width = |text: &str, size: usize| {
            (FONT_FAMILY, size as f64)
                .into_font()
                .box_size(text)
                .map(|(width, _)| width as usize)
                .unwrap_or((text.chars().count() as f64 * size as f64 * CHAR_WIDTH) as usize)
        };

        let title_lines: Vec<&str> = self.title.as_deref().map(|title| title.lines().collect()).unwrap_or_default();
        let title_height = if title_lines.is_empty() { 0 } else { title_lines.len() * (TITLE_PX + GAP_PX) + GAP_PX };
        let header_height = if self.column_titles.is_empty() { 0 } else { COLUMN_TITLE_PX + GAP_PX };
        let legend_items: Vec<usize> = self
            .legend
            .iter()
            .map(|(label, _)| LEGEND_PX + GAP_PX + text_width(label, LEGEND_PX) + 3 * GAP_PX)
            .collect();
        let legend_height = if self.legend.is_empty() { 0 } else { LEGEND_PX + 2 * GAP_PX };
        let pictures_width = columns * column_width + (columns + 1) * GAP_PX;
        let width = pictures_width
            .max(title_lines.iter().map(|line| text_width(line, TITLE_PX) + 2 * GAP_PX).max().unwrap_or(0))
            .max(legend_items.iter().sum::<usize>() + 2 * GAP_PX);
        let pictures_top = title_height + header_height;
        let height = pictures_top + self.rows.len() * (row_height + GAP_PX) + GAP_PX + legend_height;
        let left_of = |column: usize| GAP_PX + column * (column_width + GAP_PX);

        png(path, (width as u32, height as u32), |root| {
            let fail = |error: plotters::drawing::DrawingAreaErrorKind<_>| error.to_string();
            root.fill(&WHITE).map_err(fail)?;
            let centred = |size: usize| {
                (FONT_FAMILY, size as f64).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Center))
            };
            for (line, text) in title_lines.iter().enumerate() {
                let middle = ((width / 2) as i32, (GAP_PX + line * (TITLE_PX + GAP_PX) + TITLE_PX / 2) as i32);
                root.draw_text(text, &centred(TITLE_PX), middle).map_err(fail)?;
            }
            for (column, title) in self.column_titles.iter().enumerate().take(columns) {
                let middle = ((left_of(column) + column_width / 2) as i32, (title_height + COLUMN_TITLE_PX / 2) as i32);
                root.draw_text(title, &centred(COLUMN_TITLE_PX), middle).map_err(fail)?;
            }
            for (row, pictures) in self.rows.iter().enumerate() {
                let top = pictures_top + GAP_PX + row * (row_height + GAP_PX);
                for (column, picture) in pictures.iter().enumerate() {
                    let left = left_of(column);
                    for (index, rgb) in picture.pixels.iter().enumerate() {
                        let (x, y) = (left + (index % picture.width) * scale, top + (index / picture.width) * scale);
                        // plotters fills a rectangle up to, not including, its second corner.
                        let corners = [(x as i32, y as i32), ((x + scale) as i32, (y + scale) as i32)];
                        root.draw(&Rectangle::new(corners, RGBColor(rgb[0], rgb[1], rgb[2]).filled())).map_err(fail)?;
                    }
                    for outline in &picture.outlines {
                        let colour = RGBColor(outline.colour[0], outline.colour[1], outline.colour[2]);
                        for inset in 0..OUTLINE_PX {
                            let corners = [
                                (
                                    (left + outline.left * scale + inset) as i32,
                                    (top + outline.top * scale + inset) as i32,
                                ),
                                (
                                    (left + outline.right * scale - 1 - inset) as i32,
                                    (top + outline.bottom * scale - 1 - inset) as i32,
                                ),
                            ];
                            root.draw(&Rectangle::new(corners, colour.stroke_width(1))).map_err(fail)?;
                        }
                    }
                }
            }
            let mut x = GAP_PX;
            let y = height - legend_height + GAP_PX;
            for ((label, colour), item_width) in self.legend.iter().zip(&legend_items) {
                let swatch = [(x as i32, y as i32), ((x + LEGEND_PX) as i32, (y + LEGEND_PX) as i32)];
                root.draw(&Rectangle::new(swatch, RGBColor(colour[0], colour[1], colour[2]).filled())).map_err(fail)?;
                root.draw(&Rectangle::new(swatch, BLACK.stroke_width(1))).map_err(fail)?;
                let style =
                    (FONT_FAMILY, LEGEND_PX as f64).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
                root.draw_text(label, &style, ((x + LEGEND_PX + GAP_PX) as i32, (y + LEGEND_PX / 2) as i32))
                    .map_err(fail)?;
                x += item_width;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_are_copied_tinted_and_outlined_where_the_grid_says() {
        // A 4×4 picture of 2-px patches: patch 3 is the bottom-right quarter.
        let mut picture = Picture::new(4, 4, vec![[0, 0, 0]; 16]);
        let source = Picture::new(4, 4, (0..16).map(|value| [value as u8; 3]).collect());
        picture.copy_patch(3, &source, 0, 2);
        assert_eq!(picture.pixels[2 * 4 + 2], [0; 3]);
        assert_eq!(picture.pixels[3 * 4 + 3], [5; 3]);
        assert_eq!(picture.pixels[0], [0; 3]);
        picture.tint_patch(0, 2, [200, 100, 0], 0.5);
        assert_eq!(picture.pixels[4 + 1], [100, 50, 0]);
        let outline = Outline::around(&[1, 3], 2, 2, [1, 2, 3]).unwrap();
        assert_eq!((outline.left, outline.top, outline.right, outline.bottom), (2, 0, 4, 4));
        assert!(Outline::around(&[], 2, 2, [0; 3]).is_none());
    }

    #[test]
    fn grey_and_colour_planes_become_rgb_pixels() {
        // 2×2 images: one grey plane, or red, green and blue planes one after another.
        let grey = Picture::from_planes(&[0, 50, 100, 150], 2, 1);
        assert_eq!(grey.pixels, vec![[0; 3], [50; 3], [100; 3], [150; 3]]);
        let colour = Picture::from_planes(&[1, 2, 3, 4, 10, 20, 30, 40, 100, 200, 250, 255], 2, 3);
        assert_eq!(colour.pixels, vec![[1, 10, 100], [2, 20, 200], [3, 30, 250], [4, 40, 255]]);
    }

    #[test]
    fn a_sheet_that_fails_while_writing_leaves_the_previous_file_as_it_was() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("figure.png");
        std::fs::write(&path, b"the previous figure").unwrap();
        // The encoder cannot create its file where a folder stands in the way.
        std::fs::create_dir(jepa_shared::atomic::temp_name(&path)).unwrap();
        let picture = Picture::new(2, 2, vec![[9, 9, 9]; 4]);
        let sheet =
            Sheet { rows: vec![vec![picture]], legend: vec![("a".into(), [1, 2, 3])], scale: 3, ..Sheet::default() };
        assert!(sheet.draw(&path).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"the previous figure");
        // And drawn where nothing is in the way, the figure replaces it.
        std::fs::remove_dir(jepa_shared::atomic::temp_name(&path)).unwrap();
        sheet.draw(&path).unwrap();
        assert_eq!(&std::fs::read(&path).unwrap()[..4], b"\x89PNG");
    }

    #[test]
    fn a_sheet_with_nothing_to_draw_writes_nothing() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("empty.png");
        let error = Sheet { title: Some("nothing".into()), ..Sheet::default() }.draw(&path).unwrap_err();
        assert!(error.to_string().contains("no pictures"), "{error}");
        assert_eq!(std::fs::read_dir(folder.path()).unwrap().count(), 0);
    }
}
