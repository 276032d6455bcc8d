//! Images to predict: a folder (every PNG or JPEG below it, sorted) or a CSV with a `path` column, decoded,
//! resized and scaled by the training pipeline's own decoder (`data::images`) to the checkpoint's input shape, a
//! batch at a time; each prediction is keyed by the image's path (inside the folder, or as the CSV writes it).

use super::input::Samples;
use super::InputError;
use crate::data::images::{self, Unlabelled};
use anyhow::Result;
use std::path::Path;

pub struct ImageInput {
    images: Unlabelled,
    next: usize,
    workers: usize,
    /// The keys of the last batch's images.
    last: std::ops::Range<usize>,
}

impl ImageInput {
    /// Lists the images of `path` to decode to the checkpoint's `input_shape` (`[channels, height, width]`).
    pub fn open(path: &Path, input_shape: &[i64]) -> Result<ImageInput> {
        let name = path.display().to_string();
        let bad = |message: String| -> anyhow::Error { InputError { source_name: name.clone(), line: None, message }.into() };
        let &[c @ (1 | 3), h @ 1..=16_384, w @ 1..=16_384] = input_shape else {
            return Err(bad(format!("is images, but the checkpoint's model takes samples of shape {input_shape:?}; give the input it was trained on")));
        };
        let images = images::unlabelled(path, c as u8, h as u32, w as u32)?;
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(ImageInput { images, next: 0, workers, last: 0..0 })
    }
}

impl Samples for ImageInput {
    fn next_batch(&mut self, max: usize, out: &mut Vec<f32>) -> Result<usize> {
        let end = (self.next + max).min(self.images.len());
        self.images.decode(self.next..end, self.workers, out)?;
        self.last = self.next..end;
        self.next = end;
        Ok(self.last.len())
    }

    fn keys(&self) -> Option<&[String]> {
        Some(&self.images.keys[self.last.clone()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::images::ImageSpec;

    /// Predict's images are the very tensors training reads: same decode, resize and scaling.
    #[test]
    fn images_to_predict_decode_as_training_decodes_them() {
        let dir = tempfile::tempdir().unwrap();
        for (class, n) in [("a", 3u8), ("b", 2)] {
            std::fs::create_dir_all(dir.path().join(class)).unwrap();
            for i in 0..n {
                let img = image::RgbImage::from_fn(13, 9, |x, y| image::Rgb([x as u8 * 17 + i, y as u8 * 23, (x * y) as u8 + i * 40]));
                img.save(dir.path().join(class).join(format!("{i}.png"))).unwrap();
            }
        }
        let spec = ImageSpec { size: Some((6, 8)), channels: Some(3), workers: 2, known_classes: None };
        let training = images::read(dir.path(), &spec).unwrap();
        let mut input = ImageInput::open(dir.path(), &[3, 6, 8]).unwrap();
        let (mut all, mut keys) = (Vec::new(), Vec::new());
        while input.next_batch(2, &mut all).unwrap() > 0 {
            keys.extend(input.keys().unwrap().iter().cloned());
        }
        assert_eq!(all, training.features);
        assert_eq!(keys, ["a/0.png", "a/1.png", "a/2.png", "b/0.png", "b/1.png"]);
        let err = ImageInput::open(dir.path(), &[4]).err().unwrap().to_string();
        assert!(err.contains("the checkpoint's model takes samples of shape [4]"), "{err}");
    }
}
