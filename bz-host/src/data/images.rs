//! `source = "images"`: PNG and JPEG files, in torchvision's ImageFolder layout (one subfolder per class, class ids
//! in sorted folder-name order) or listed in a CSV of `path,label` rows, decoded by worker threads into one
//! channels-first set scaled to `[0, 1]`, each image resized to one size.
//!
//! Untrusted input: a CSV's paths stay inside its folder, image headers are read before any pixel and their sizes
//! are bounded, and the whole set must fit in memory before it is decoded. Streamed (`data.stream = true`), a set
//! is only listed here ([`index`]) and each image decoded when its batch is made, by the same [`decode_into`].

use super::formats::{DataError, Location, RawSet, Targets};
use super::stream::{SampleReader, StreamSet};
use image::imageops::FilterType;
use image::{ColorType, DynamicImage, ImageDecoder, ImageReader, Limits};
use std::path::{Component, Path, PathBuf};

/// Sides above this are refused before decoding: no training image is this large, and a hostile header could ask
/// the decoder for gigabytes.
const MAX_SIDE: u32 = 16_384;
/// A decoder's allocation cap (one image at a time per worker).
const MAX_DECODE_BYTES: u64 = 1 << 30;
/// The extensions read, compared without case.
const EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

/// How to read a folder or CSV of images.
pub struct ImageSpec<'a> {
    /// `(height, width)`; `None`: the images' own size, which they must share.
    pub size: Option<(u32, u32)>,
    /// 1 or 3; `None`: 1 when every image is grayscale.
    pub channels: Option<u8>,
    /// Decoding threads (at least 1).
    pub workers: usize,
    /// The training classes, for a validation or test set: its labels must be among them.
    pub known_classes: Option<&'a [String]>,
}

/// One image file and its class id.
struct Entry {
    path: PathBuf,
    class: i64,
}

/// The layout and pixels every image of a set is decoded into.
#[derive(Clone, Copy)]
struct Shape {
    channels: u8,
    height: u32,
    width: u32,
}

impl Shape {
    fn sample_len(self) -> usize {
        self.channels as usize * self.height as usize * self.width as usize
    }
}

/// A folder or CSV of images, listed and sized but not decoded.
pub struct ImageIndex {
    entries: Vec<Entry>,
    shape: Shape,
    names: Vec<String>,
}

impl ImageIndex {
    fn dims(&self) -> Vec<usize> {
        vec![self.shape.channels as usize, self.shape.height as usize, self.shape.width as usize]
    }

    fn targets(&self) -> Targets {
        Targets::Classes(self.entries.iter().map(|e| e.class).collect())
    }

    /// The set to stream: each image decoded when a batch needs it.
    pub fn into_stream_set(self) -> StreamSet {
        let (shape, targets, class_names) = (self.dims(), self.targets(), Some(self.names.clone()));
        StreamSet { reader: std::sync::Arc::new(self), shape, targets, class_names }
    }
}

impl SampleReader for ImageIndex {
    fn read(&self, index: usize, out: &mut [f32]) -> Result<(), DataError> {
        decode_into(&self.entries[index].path, self.shape, out)
    }
}

/// Lists the images a folder or CSV holds, with their class names (index = class id), and fixes the size and
/// channels they decode to.
pub fn index(path: &Path, spec: &ImageSpec) -> Result<ImageIndex, DataError> {
    if let Err(e) = std::fs::metadata(path) {
        return Err(DataError::Read { path: path.to_owned(), error: e });
    }
    let (entries, names) = if path.is_dir() { list_folder(path, spec.known_classes)? } else { list_csv(path, spec.known_classes)? };
    if entries.is_empty() {
        return Err(invalid(path, "holds no PNG or JPEG images", "put images in one subfolder per class, or list them in a CSV with path and label columns"));
    }
    let shape = shape_of(&entries, spec)?;
    Ok(ImageIndex { entries, shape, names })
}

/// Reads the images a folder or CSV lists into memory, with their class names (index = class id).
pub fn read(path: &Path, spec: &ImageSpec) -> Result<RawSet, DataError> {
    let index = index(path, spec)?;
    check_memory(path, index.entries.len(), index.shape)?;
    let features = decode_all(&index.entries, index.shape, spec.workers)?;
    Ok(RawSet { features, shape: index.dims(), targets: index.targets(), class_names: Some(index.names) })
}

/// ImageFolder: each subfolder a class, its images (any depth below it) that class's samples.
fn list_folder(dir: &Path, known: Option<&[String]>) -> Result<(Vec<Entry>, Vec<String>), DataError> {
    let mut classes: Vec<String> =
        read_dir(dir)?.into_iter().filter(|p| p.is_dir()).filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned())).collect();
    classes.sort();
    if classes.is_empty() {
        return Err(invalid(dir, "has no class subfolders", "put each class's images in a subfolder named after the class (e.g. cat/, dog/)"));
    }
    let names = known.map_or_else(|| classes.clone(), <[String]>::to_vec);
    let mut entries = Vec::new();
    for class in &classes {
        let id = class_id(&names, class).ok_or_else(|| {
            invalid(dir, format!("has a class folder {class:?} that the training images do not have"), format!("the training classes are {names:?}"))
        })?;
        let mut files = Vec::new();
        collect_images(&dir.join(class), &mut files)?;
        files.sort();
        entries.extend(files.into_iter().map(|path| Entry { path, class: id }));
    }
    Ok((entries, names))
}

fn collect_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    for p in read_dir(dir)? {
        if p.is_dir() {
            collect_images(&p, out)?;
        } else if p.extension().is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x))) {
            out.push(p);
        }
    }
    Ok(())
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let read = |e: std::io::Error| DataError::Read { path: dir.to_owned(), error: e };
    std::fs::read_dir(dir).map_err(read)?.map(|e| e.map(|e| e.path()).map_err(read)).collect()
}

/// A CSV with `path` and `label` columns; class ids are the labels in sorted order (or the training classes').
fn list_csv(file: &Path, known: Option<&[String]>) -> Result<(Vec<Entry>, Vec<String>), DataError> {
    let rows = csv_rows(file, true)?;
    let mut names: Vec<String> = match known {
        Some(k) => k.to_vec(),
        None => rows.iter().filter_map(|r| r.label.clone()).collect(),
    };
    names.sort();
    names.dedup();
    let entries = rows
        .into_iter()
        .map(|row| match class_id(&names, row.label.as_deref().unwrap_or_default()) {
            Some(class) => Ok(Entry { path: row.path, class }),
            None => Err(invalid(
                file,
                format!("has label {:?}, which the training images do not have", row.label.unwrap_or_default()),
                format!("the training classes are {names:?}"),
            )),
        })
        .collect::<Result<_, _>>()?;
    Ok((entries, names))
}

/// One row of an images CSV: the image's path (inside the CSV's folder), as written and joined, and its label.
struct CsvRow {
    written: String,
    path: PathBuf,
    label: Option<String>,
}

/// The rows of an images CSV; `label` column required or not.
fn csv_rows(file: &Path, need_label: bool) -> Result<Vec<CsvRow>, DataError> {
    let base = file.parent().unwrap_or(Path::new("."));
    let mut reader = csv::Reader::from_path(file)
        .map_err(|e| invalid(file, format!("cannot be read as CSV: {e}"), "give a folder, or a CSV with path and label columns"))?;
    let headers = reader.headers().map_err(|e| invalid(file, format!("has no header row: {e}"), "start it with `path,label`"))?.clone();
    let column = |name: &str| headers.iter().position(|h| h.trim() == name);
    let (pc, lc) = (column("path"), column("label"));
    let Some(pc) = pc.filter(|_| lc.is_some() || !need_label) else {
        return Err(invalid(file, format!("has columns {:?}, not path and label", headers.iter().collect::<Vec<_>>()), "name the columns `path,label`"));
    };
    let mut rows = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let line = i as u64 + 2;
        let at = |problem: String| DataError::Invalid { path: file.to_owned(), at: Location::Line(line), problem, fix: "fix or remove the row".into() };
        let row = row.map_err(|e| at(e.to_string()))?;
        let Some(p) = row.get(pc) else { return Err(at("has too few fields".into())) };
        let label = match lc {
            Some(lc) => Some(row.get(lc).ok_or_else(|| at("has too few fields".into()))?.trim().to_string()),
            None => None,
        };
        let rel = Path::new(p.trim());
        if rel.is_absolute() || rel.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(at(format!("path {p:?} leads out of the CSV's folder; give paths relative to {}", base.display())));
        }
        rows.push(CsvRow { written: p.trim().to_string(), path: base.join(rel), label });
    }
    Ok(rows)
}

/// Images to predict, in order, each with the key its prediction is written under.
pub struct Unlabelled {
    pub keys: Vec<String>,
    index: ImageIndex,
}

impl Unlabelled {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Decodes images `range` into `out` (appended, `[n, C, H, W]` row-major) as training decodes them.
    pub fn decode(&self, range: std::ops::Range<usize>, workers: usize, out: &mut Vec<f32>) -> Result<(), DataError> {
        out.extend(decode_all(&self.index.entries[range], self.index.shape, workers)?);
        Ok(())
    }
}

/// The images of a folder (every PNG or JPEG below it, sorted; keyed by their path inside it) or of a CSV's `path`
/// column (keyed as written there), to decode to `[channels, height, width]`.
pub fn unlabelled(path: &Path, channels: u8, height: u32, width: u32) -> Result<Unlabelled, DataError> {
    let (keys, paths): (Vec<String>, Vec<PathBuf>) = if path.is_dir() {
        let mut files = Vec::new();
        collect_images(path, &mut files)?;
        files.sort();
        files.into_iter().map(|f| (f.strip_prefix(path).unwrap_or(&f).display().to_string(), f)).unzip()
    } else {
        csv_rows(path, false)?.into_iter().map(|r| (r.written, r.path)).unzip()
    };
    if paths.is_empty() {
        return Err(invalid(path, "holds no PNG or JPEG images", "give a folder of images, or a CSV with a path column"));
    }
    let entries = paths.into_iter().map(|path| Entry { path, class: 0 }).collect();
    Ok(Unlabelled { keys, index: ImageIndex { entries, shape: Shape { channels, height, width }, names: Vec::new() } })
}

fn class_id(names: &[String], name: &str) -> Option<i64> {
    names.iter().position(|n| n == name).map(|i| i as i64)
}

/// The size and channels to decode to: the config's, else read from the image headers (no pixels decoded).
fn shape_of(entries: &[Entry], spec: &ImageSpec) -> Result<Shape, DataError> {
    if let (Some((height, width)), Some(channels)) = (spec.size, spec.channels) {
        return Ok(Shape { channels, height, width });
    }
    let mut first: Option<(&Path, u32, u32)> = None;
    let mut gray = true;
    for e in entries {
        let decoder = reader(&e.path)?.into_decoder().map_err(|err| undecodable(&e.path, err))?;
        let (w, h) = decoder.dimensions();
        gray &= matches!(decoder.color_type(), ColorType::L8 | ColorType::L16 | ColorType::La8 | ColorType::La16);
        match first {
            None => first = Some((&e.path, w, h)),
            Some((p, fw, fh)) if spec.size.is_none() && (fw, fh) != (w, h) => {
                return Err(invalid(
                    &e.path,
                    format!("is {w}x{h} but {} is {fw}x{fh}", p.display()),
                    "set data.size = [height, width] to resize every image to one size",
                ));
            }
            Some(_) => {}
        }
        if spec.size.is_some() && spec.channels.is_none() && !gray {
            break;
        }
    }
    let Some((_, w, h)) = first else { return Err(invalid(Path::new("images"), "no images to read", "add images")) };
    let (height, width) = spec.size.unwrap_or((h, w));
    Ok(Shape { channels: spec.channels.unwrap_or(if gray { 1 } else { 3 }), height, width })
}

/// Refuses a set whose pixels would not fit in this machine's memory, before any is decoded.
fn check_memory(path: &Path, n: usize, shape: Shape) -> Result<(), DataError> {
    let bytes = (n as u64).saturating_mul(shape.sample_len() as u64).saturating_mul(4);
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    let have = sys.total_memory();
    if have > 0 && bytes > have / 2 {
        return Err(invalid(
            path,
            format!(
                "{n} images of {}x{}x{} take {:.1} GiB as f32, more than half this machine's memory",
                shape.channels,
                shape.height,
                shape.width,
                bytes as f64 / (1u64 << 30) as f64
            ),
            "set a smaller data.size, or data.stream = true to decode the images a batch at a time",
        ));
    }
    Ok(())
}

/// Decodes every image into one row-major `[N, C, H, W]` buffer, `workers` threads each taking every
/// `workers`-th chunk; the result does not depend on the thread count.
fn decode_all(entries: &[Entry], shape: Shape, workers: usize) -> Result<Vec<f32>, DataError> {
    let len = shape.sample_len();
    let mut features = vec![0f32; entries.len() * len];
    let chunk = entries.len().div_ceil(workers.max(1) * 4).max(1);
    let jobs: Vec<(&[Entry], &mut [f32])> = entries.chunks(chunk).zip(features.chunks_mut(chunk * len)).collect();
    let queue = std::sync::Mutex::new(jobs);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers.max(1))
            .map(|_| {
                s.spawn(|| -> Result<(), DataError> {
                    loop {
                        let Some((es, out)) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop() else { return Ok(()) };
                        for (e, row) in es.iter().zip(out.chunks_mut(len)) {
                            decode_into(&e.path, shape, row)?;
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().unwrap_or_else(|_| Err(invalid(Path::new("images"), "a decoding thread failed", "report this"))))
    })?;
    Ok(features)
}

/// One image, resized and converted to channels-first `[0, 1]` values: the only decode training (in memory or
/// streamed) and prediction use.
fn decode_into(path: &Path, shape: Shape, out: &mut [f32]) -> Result<(), DataError> {
    let mut img = reader(path)?.decode().map_err(|e| undecodable(path, e))?;
    if (img.height(), img.width()) != (shape.height, shape.width) {
        // Bilinear with antialiasing, as torchvision's Resize does on tensors and PIL images.
        img = img.resize_exact(shape.width, shape.height, FilterType::Triangle);
    }
    let plane = shape.height as usize * shape.width as usize;
    match shape.channels {
        1 => out.iter_mut().zip(DynamicImage::to_luma8(&img).as_raw()).for_each(|(o, &p)| *o = f32::from(p) / 255.0),
        _ => {
            let rgb = img.to_rgb8();
            for (i, px) in rgb.as_raw().chunks_exact(3).enumerate() {
                for (c, &v) in px.iter().enumerate() {
                    out[c * plane + i] = f32::from(v) / 255.0;
                }
            }
        }
    }
    Ok(())
}

fn reader(path: &Path) -> Result<ImageReader<std::io::BufReader<std::fs::File>>, DataError> {
    let mut r = ImageReader::open(path).map_err(|e| DataError::Read { path: path.to_owned(), error: e })?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    r.limits(limits);
    r.with_guessed_format().map_err(|e| DataError::Read { path: path.to_owned(), error: e })
}

fn undecodable(path: &Path, e: image::ImageError) -> DataError {
    invalid(path, format!("cannot be decoded: {e}"), "remove the file or replace it with a valid PNG or JPEG")
}

fn invalid(path: &Path, problem: impl Into<String>, fix: impl Into<String>) -> DataError {
    DataError::Invalid { path: path.to_owned(), at: Location::File, problem: problem.into(), fix: fix.into() }
}
