//! The confusion matrix as a PNG heatmap: one square cell per (true, predicted) pair, rows true classes, white for
//! none of the row's samples to dark blue for all of them, with the count written in the cell when it fits.
//!
//! Colour is the count over its row's total (the class's recall on the diagonal), so a rare class's row is as
//! readable as a common one's.

use crate::canvas::{number_height, number_width, Canvas, Png};

/// Pixels per cell when the matrix is small; larger ones shrink so the image stays within [`MAX_SIDE`].
pub const CELL: usize = 32;
pub const MAX_SIDE: usize = 1024;

const WHITE: [u8; 3] = [255, 255, 255];
/// The dark end of matplotlib's "Blues".
const BLUE: [u8; 3] = [8, 48, 107];

/// The side of one cell for `n` classes.
pub fn cell_size(n: usize) -> usize {
    (MAX_SIDE / n.max(1)).clamp(1, CELL)
}

/// Each cell's shade in [0, 1]: its count over its row's total.
pub fn shade(rows: &[Vec<u64>], r: usize, c: usize) -> f64 {
    let total: u64 = rows[r].iter().sum();
    if total == 0 {
        0.0
    } else {
        rows[r][c] as f64 / total as f64
    }
}

fn color(t: f64) -> [u8; 3] {
    std::array::from_fn(|i| (WHITE[i] as f64 + (BLUE[i] as f64 - WHITE[i] as f64) * t).round() as u8)
}

/// `n` centred in the cell at (`x`, `y`) at the largest scale (2 or 1) that leaves a 2-pixel margin; nothing if
/// even scale 1 does not fit.
fn number_in_cell(canvas: &mut Canvas, x: usize, y: usize, cell: usize, n: u64, rgb: [u8; 3]) {
    let Some(scale) = [2, 1].into_iter().find(|&s| number_width(n, s) + 4 <= cell && number_height(s) + 4 <= cell) else { return };
    let (w, h) = (number_width(n, scale), number_height(scale));
    canvas.number(x + (cell - w) / 2, y + (cell - h) / 2, scale, n, rgb);
}

/// The heatmap of a square matrix; `None` when `rows` is empty or not square.
pub fn confusion_matrix(rows: &[Vec<u64>]) -> Option<Result<Png, png::EncodingError>> {
    let n = rows.len();
    if n == 0 || rows.iter().any(|r| r.len() != n) {
        return None;
    }
    let cell = cell_size(n);
    let side = n * cell;
    let mut canvas = Canvas::new(side, side, WHITE);
    for r in 0..n {
        for c in 0..n {
            let t = shade(rows, r, c);
            canvas.fill(c * cell, r * cell, cell, cell, color(t));
            // Light digits on dark cells, dark ones on light cells.
            let ink = if t > 0.5 { WHITE } else { [40, 40, 40] };
            number_in_cell(&mut canvas, c * cell, r * cell, cell, rows[r][c], ink);
        }
    }
    Some(canvas.encode())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canvas::decode;

    fn pixel(buf: &[u8], side: usize, x: usize, y: usize) -> [u8; 3] {
        let at = (y * side + x) * 3;
        [buf[at], buf[at + 1], buf[at + 2]]
    }

    #[test]
    fn cells_are_shaded_by_their_share_of_the_row_and_carry_their_count() {
        let rows = vec![vec![9, 1, 0], vec![0, 5, 5], vec![0, 0, 0]];
        let p = confusion_matrix(&rows).unwrap().unwrap();
        assert_eq!((p.width, p.height), (96, 96));
        let (info, buf) = decode(&p);
        assert_eq!((info.width, info.height, info.color_type), (96, 96, png::ColorType::Rgb));
        // Corner pixels (text is centred, away from them).
        let at = |r: usize, c: usize| pixel(&buf, 96, c * 32 + 1, r * 32 + 1);
        assert_eq!(at(0, 0), color(0.9));
        assert_eq!(at(0, 2), WHITE);
        assert_eq!(at(1, 1), at(1, 2));
        assert_eq!(at(2, 0), WHITE, "an empty row is white");
        assert!(at(0, 0)[0] < at(0, 1)[0] && at(0, 1)[0] < at(0, 2)[0]);
        // The count "9" is drawn in white on the dark cell: its top-left stroke sits where the glyph starts.
        let cell_has = |r: usize, c: usize, rgb: [u8; 3]| (0..32).any(|y| (0..32).any(|x| pixel(&buf, 96, c * 32 + x, r * 32 + y) == rgb));
        assert!(cell_has(0, 0, WHITE));
        assert!(cell_has(0, 2, [40, 40, 40]), "zero is written too");
    }

    #[test]
    fn large_matrices_shrink_to_the_cap_and_bad_ones_are_refused() {
        assert_eq!(cell_size(10), 32);
        assert_eq!(cell_size(100), 10);
        assert_eq!(cell_size(5000), 1);
        let rows: Vec<Vec<u64>> = (0..100).map(|r| (0..100).map(|c| (r == c) as u64 * 1000).collect()).collect();
        let p = confusion_matrix(&rows).unwrap().unwrap();
        assert_eq!(p.width, 1000);
        assert!(confusion_matrix(&[]).is_none());
        assert!(confusion_matrix(&[vec![1, 2]]).is_none());
    }
}
