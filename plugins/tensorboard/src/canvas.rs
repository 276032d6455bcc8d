//! An RGB canvas with filled rectangles and a 3x5 digit font, encoded as PNG: what the heatmap and the
//! misclassified grid draw on.

/// An encoded RGB image.
pub struct Png {
    pub width: u32,
    pub height: u32,
    pub bytes: Vec<u8>,
}

/// A 3x5 bitmap per digit, top row first, the high bit of each row leftmost.
const DIGITS: [[u8; 5]; 10] = [
    [0b111, 0b101, 0b101, 0b101, 0b111],
    [0b010, 0b110, 0b010, 0b010, 0b111],
    [0b111, 0b001, 0b111, 0b100, 0b111],
    [0b111, 0b001, 0b111, 0b001, 0b111],
    [0b101, 0b101, 0b111, 0b001, 0b001],
    [0b111, 0b100, 0b111, 0b001, 0b111],
    [0b111, 0b100, 0b111, 0b101, 0b111],
    [0b111, 0b001, 0b001, 0b001, 0b001],
    [0b111, 0b101, 0b111, 0b101, 0b111],
    [0b111, 0b101, 0b111, 0b001, 0b111],
];

/// Width in pixels of `n` drawn at `scale` (a 1-column gap between digits).
pub fn number_width(n: u64, scale: usize) -> usize {
    n.to_string().len() * 4 * scale - scale
}

/// Height in pixels of a number drawn at `scale`.
pub fn number_height(scale: usize) -> usize {
    5 * scale
}

/// RGB pixels, row-major.
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl Canvas {
    pub fn new(width: usize, height: usize, background: [u8; 3]) -> Canvas {
        Canvas { width, height, pixels: background.repeat(width * height) }
    }

    /// Sets one pixel; outside the canvas, nothing.
    pub fn set(&mut self, x: usize, y: usize, rgb: [u8; 3]) {
        if x < self.width && y < self.height {
            let at = (y * self.width + x) * 3;
            self.pixels[at..at + 3].copy_from_slice(&rgb);
        }
    }

    pub fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, rgb: [u8; 3]) {
        for row in y..y + h {
            for col in x..x + w {
                self.set(col, row, rgb);
            }
        }
    }

    /// `n` with its top-left corner at (`x`, `y`), each font pixel a `scale`-sided square.
    pub fn number(&mut self, x: usize, y: usize, scale: usize, n: u64, rgb: [u8; 3]) {
        for (k, d) in n.to_string().bytes().enumerate() {
            let glyph = DIGITS[(d - b'0') as usize];
            for (gy, bits) in glyph.iter().enumerate() {
                for gx in 0..3 {
                    if bits & (0b100 >> gx) != 0 {
                        self.fill(x + (k * 4 + gx) * scale, y + gy * scale, scale, scale, rgb);
                    }
                }
            }
        }
    }

    pub fn encode(&self) -> Result<Png, png::EncodingError> {
        let (width, height) = (self.width as u32, self.height as u32);
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&self.pixels)?;
        writer.finish()?;
        Ok(Png { width, height, bytes })
    }
}

/// Decodes an RGB PNG (for tests): its info and pixels.
#[cfg(test)]
pub fn decode(p: &Png) -> (png::OutputInfo, Vec<u8>) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(&p.bytes)).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    (info, buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_drawn_where_their_width_says_and_clipped_at_the_edge() {
        let mut c = Canvas::new(20, 6, [0, 0, 0]);
        assert_eq!((number_width(10, 1), number_height(1)), (7, 5));
        c.number(0, 0, 1, 10, [255, 0, 0]);
        // "1" has its middle column lit in the top row; "0" its full top row from x = 4.
        let lit = |c: &Canvas, x: usize, y: usize| c.pixels[(y * 20 + x) * 3] == 255;
        assert!(!lit(&c, 0, 0) && lit(&c, 1, 0) && lit(&c, 4, 0) && lit(&c, 6, 0) && !lit(&c, 7, 0));
        c.number(18, 4, 2, 8, [255, 0, 0]);
        let (info, buf) = decode(&c.encode().unwrap());
        assert_eq!((info.width, info.height, buf.len()), (20, 6, 20 * 6 * 3));
    }
}
