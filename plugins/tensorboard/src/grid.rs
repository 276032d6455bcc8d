//! The misclassified validation samples the host sent (`val/misclassified`) tiled into one PNG: row by row in
//! the order sent (by split index), each tile the sample's pixels enlarged to at least [`MIN_TILE`] pixels a side,
//! with the true class id in green and the predicted one in red under it.

use crate::canvas::{number_height, number_width, Canvas, Png};
use bz_plugin_api::payload::{Misclassified, MisclassifiedSample};

/// Small images (8x8 digits) are enlarged by a whole factor to at least this many pixels a side.
pub const MIN_TILE: usize = 32;
/// Space between tiles and around the grid.
pub const GAP: usize = 2;
/// The label strip under each tile: digits at scale 2 with a 2-pixel margin.
pub const LABEL: usize = 14;

const BACKGROUND: [u8; 3] = [32, 32, 32];
pub const TRUE_INK: [u8; 3] = [60, 210, 60];
pub const PREDICTED_INK: [u8; 3] = [240, 70, 70];

/// Where things are in the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub columns: usize,
    pub rows: usize,
    /// Enlargement of each sample pixel.
    pub zoom: usize,
    pub tile_width: usize,
    pub tile_height: usize,
    /// A cell is at least as wide as its tile, and wide enough for a label.
    pub cell_width: usize,
}

impl Layout {
    pub fn new(tiles: usize, height: usize, width: usize) -> Layout {
        let columns = (tiles as f64).sqrt().ceil().max(1.0) as usize;
        let zoom = (MIN_TILE / height.max(width).max(1)).max(1);
        let (tile_width, tile_height) = (width * zoom, height * zoom);
        Layout { columns, rows: tiles.div_ceil(columns), zoom, tile_width, tile_height, cell_width: tile_width.max(MIN_TILE) }
    }

    pub fn width(&self) -> usize {
        self.columns * (self.cell_width + GAP) + GAP
    }

    pub fn height(&self) -> usize {
        self.rows * (self.tile_height + LABEL + GAP) + GAP
    }

    /// The top-left corner of tile `i`'s image.
    pub fn tile_origin(&self, i: usize) -> (usize, usize) {
        let (row, col) = (i / self.columns, i % self.columns);
        let x = GAP + col * (self.cell_width + GAP) + (self.cell_width - self.tile_width) / 2;
        (x, GAP + row * (self.tile_height + LABEL + GAP))
    }
}

/// One sample's pixels, checked.
struct Tile<'a> {
    sample: &'a MisclassifiedSample,
    pixels: Vec<u8>,
}

/// The grid and the samples it shows (those whose pixels check), in tile order; `None` when no sample is usable.
pub fn grid(m: &Misclassified) -> Option<(Result<Png, png::EncodingError>, Vec<&MisclassifiedSample>)> {
    let tiles: Vec<Tile> =
        m.samples.iter().take(Misclassified::MAX_SAMPLES).filter_map(|sample| m.pixels(sample).map(|pixels| Tile { sample, pixels })).collect();
    if tiles.is_empty() {
        return None;
    }
    let (c, h, w) = (m.channels as usize, m.height as usize, m.width as usize);
    let layout = Layout::new(tiles.len(), h, w);
    let mut canvas = Canvas::new(layout.width(), layout.height(), BACKGROUND);
    for (i, tile) in tiles.iter().enumerate() {
        let (x0, y0) = layout.tile_origin(i);
        for y in 0..layout.tile_height {
            for x in 0..layout.tile_width {
                let at = (y / layout.zoom) * w + x / layout.zoom;
                let rgb = if c == 1 { [tile.pixels[at]; 3] } else { std::array::from_fn(|k| tile.pixels[k * h * w + at]) };
                canvas.set(x0 + x, y0 + y, rgb);
            }
        }
        let cell_x = x0 - (layout.cell_width - layout.tile_width) / 2;
        label(&mut canvas, cell_x, y0 + layout.tile_height, layout.cell_width, tile.sample);
    }
    Some((canvas.encode(), tiles.iter().map(|t| t.sample).collect()))
}

/// "true predicted" centred under the tile, at scale 2 when it fits the cell, else 1, else not at all.
fn label(canvas: &mut Canvas, x: usize, y: usize, cell_width: usize, s: &MisclassifiedSample) {
    let width = |scale| number_width(s.target, scale) + 2 * scale + number_width(s.predicted, scale);
    let Some(scale) = [2, 1].into_iter().find(|&scale| width(scale) + 2 <= cell_width) else { return };
    let x = x + (cell_width - width(scale)) / 2;
    let y = y + (LABEL - number_height(scale)) / 2;
    canvas.number(x, y, scale, s.target, TRUE_INK);
    canvas.number(x + number_width(s.target, scale) + 2 * scale, y, scale, s.predicted, PREDICTED_INK);
}

/// The image's description on its TensorBoard card.
pub const DESCRIPTION: &str = "The first misclassified validation samples by index, row by row. Under each tile: the true class id (green), \
then the predicted one (red). Names and indices per step: the text tag val/misclassified_labels.";

/// A markdown table of the tiles (the text plugin shows one per step): tile, split index, true and predicted
/// class names.
pub fn table(m: &Misclassified, shown: &[&MisclassifiedSample]) -> String {
    let cell = |s: &str| s.replace('|', "\\|").replace(['\n', '\r'], " ");
    let mut out = format!(
        "{} of {} misclassified validation samples (tiles row by row)\n\n| tile | sample | true | predicted |\n|---|---|---|---|\n",
        shown.len(),
        m.total
    );
    for (i, s) in shown.iter().enumerate() {
        out += &format!("| {} | {} | {} ({}) | {} ({}) |\n", i + 1, s.index, cell(&s.target_label), s.target, cell(&s.predicted_label), s.predicted);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canvas::decode;
    use base64::Engine;

    fn sample(index: u64, target: u64, predicted: u64, pixels: &[u8]) -> MisclassifiedSample {
        let pixels = base64::engine::general_purpose::STANDARD.encode(pixels);
        MisclassifiedSample { index, target, predicted, target_label: target.to_string(), predicted_label: predicted.to_string(), pixels }
    }

    fn pixel(buf: &[u8], width: usize, x: usize, y: usize) -> [u8; 3] {
        let at = (y * width + x) * 3;
        [buf[at], buf[at + 1], buf[at + 2]]
    }

    #[test]
    fn tiles_are_enlarged_in_order_and_labelled() {
        // Five 2x2 gray samples: a 3x2 grid of 32-pixel tiles (zoom 16).
        let samples: Vec<_> = (0..5u8).map(|i| sample(i.into(), i.into(), 9, &[i * 50, 255, 0, 10])).collect();
        let m = Misclassified { channels: 1, height: 2, width: 2, total: 5, samples };
        let (png, shown) = grid(&m).unwrap();
        let png = png.unwrap();
        let layout = Layout::new(5, 2, 2);
        assert_eq!((layout.columns, layout.rows, layout.zoom, layout.cell_width), (3, 2, 16, 32));
        assert_eq!((png.width as usize, png.height as usize, shown.len()), (3 * 34 + 2, 2 * (32 + 14 + 2) + 2, 5));
        let (info, buf) = decode(&png);
        assert_eq!(info.color_type, png::ColorType::Rgb);
        let width = png.width as usize;
        for i in 0..5 {
            let (x, y) = layout.tile_origin(i);
            let v = i as u8 * 50;
            assert_eq!(pixel(&buf, width, x, y), [v; 3], "tile {i}'s top-left pixel");
            assert_eq!(pixel(&buf, width, x + 15, y + 15), [v; 3]);
            assert_eq!(pixel(&buf, width, x + 16, y), [255; 3]);
            assert_eq!(pixel(&buf, width, x + 31, y + 31), [10; 3]);
            let strip = |ink| (y + 32..y + 32 + LABEL).any(|yy| (x..x + 32).any(|xx| pixel(&buf, width, xx, yy) == ink));
            assert!(strip(TRUE_INK) && strip(PREDICTED_INK), "tile {i} has both labels");
        }
        // The sixth cell is empty.
        let (x, y) = layout.tile_origin(5);
        assert_eq!(pixel(&buf, width, x + 5, y + 5), BACKGROUND);
    }

    #[test]
    fn rgb_planes_become_colours_and_bad_samples_are_left_out() {
        let good = sample(0, 1, 2, &[255, 0, 0, 10, 20, 30]);
        let short = sample(1, 1, 2, &[1, 2, 3]);
        let bad = MisclassifiedSample { pixels: "!!!!!!!!".into(), ..good.clone() };
        let m = Misclassified { channels: 3, height: 1, width: 2, total: 3, samples: vec![good, short, bad] };
        let (png, shown) = grid(&m).unwrap();
        let png = png.unwrap();
        assert_eq!(shown.iter().map(|s| s.index).collect::<Vec<_>>(), [0]);
        let t = table(&m, &shown);
        assert!(t.starts_with("1 of 3 misclassified") && t.ends_with("| 1 | 0 | 1 (1) | 2 (2) |\n"), "{t}");
        let (_, buf) = decode(&png);
        let (x, y) = Layout::new(1, 1, 2).tile_origin(0);
        assert_eq!(pixel(&buf, png.width as usize, x, y), [255, 0, 20]);
        assert_eq!(pixel(&buf, png.width as usize, x + 16, y), [0, 10, 30]);
        assert!(grid(&Misclassified { samples: vec![], ..m.clone() }).is_none());
        assert!(grid(&Misclassified { channels: 2, ..m }).is_none(), "2 channels is no image");
    }
}
