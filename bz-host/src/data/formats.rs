//! Pure-Rust dataset readers: files (IDX, CSV, safetensors), the embedded digits set and
//! seeded synthetic data, all turned into flat host arrays.
//!
//! Nothing here touches libtorch. The trainer builds its tensors from a [`RawSet`] in one go,
//! so every reader returns row-major `f32` features plus targets, and every failure is a
//! [`DataError`] whose message names the file, the place in it where that applies, what is
//! wrong and what to do about it.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/// Targets of a dataset.
#[derive(Clone, Debug, PartialEq)]
pub enum Targets {
    /// One class id (`0..num_classes`) per sample.
    Classes(Vec<i64>),
    /// `width` values per sample, row-major.
    Values {
        /// `n * width` values.
        data: Vec<f32>,
        /// Values per sample.
        width: usize,
    },
}

impl Targets {
    /// Number of samples these targets cover.
    pub fn len(&self) -> usize {
        match self {
            Targets::Classes(ids) => ids.len(),
            Targets::Values { data, width } => data.len().checked_div(*width).unwrap_or(0),
        }
    }

    /// Whether there are no targets.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A dataset held in host memory, ready to become tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct RawSet {
    /// Row-major, `len() * sample_len()` values.
    pub features: Vec<f32>,
    /// Per-sample shape: `[64]` for tabular data, `[1, 28, 28]` for images (channels first).
    pub shape: Vec<usize>,
    /// One target per sample.
    pub targets: Targets,
    /// For string class labels (CSV): index = class id.
    pub class_names: Option<Vec<String>>,
}

impl RawSet {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether the set holds no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of feature values per sample (the product of `shape`).
    pub fn sample_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Number of classes for a classification set: the number of class names where there
    /// are names, else the largest class id plus one. `None` for regression targets.
    pub fn num_classes(&self) -> Option<usize> {
        let Targets::Classes(ids) = &self.targets else {
            return None;
        };
        if let Some(names) = &self.class_names {
            return Some(names.len());
        }
        // Ids are never negative by construction; a negative one would count as no class.
        let max = ids.iter().copied().max().and_then(|id| usize::try_from(id).ok());
        Some(max.map_or(0, |id| id.saturating_add(1)))
    }
}

/// Where in a file a problem was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// The file as a whole.
    File,
    /// A byte offset (after decompression, for gzipped files).
    Byte(u64),
    /// A 1-based line.
    Line(u64),
    /// A 1-based line and a column, described for people (`"price"` or `index 3`).
    Cell {
        /// 1-based line number.
        line: u64,
        /// The column's name or index.
        column: String,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File => Ok(()),
            Location::Byte(offset) => write!(f, ", byte {offset}"),
            Location::Line(line) => write!(f, ", line {line}"),
            Location::Cell { line, column } => write!(f, ", line {line}, column {column}"),
        }
    }
}

/// Why a dataset could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file (or folder) could not be opened or read.
    #[error("cannot read {}: {error}; check that the path is right and readable", path.display())]
    Read {
        /// The file that failed.
        path: PathBuf,
        /// What the operating system said.
        error: io::Error,
    },
    /// The file was read, but its contents are not usable.
    #[error("{}{at}: {problem}; {fix}", path.display())]
    Invalid {
        /// The file at fault.
        path: PathBuf,
        /// Where in it.
        at: Location,
        /// What is wrong.
        problem: String,
        /// What to do about it.
        fix: String,
    },
    /// An IDX folder lacks the files it should hold.
    #[error(
        "{}: cannot find {what}: looked for {}; {present}; put the MNIST-style IDX files there \
         (gzipped or not), named like train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz",
        dir.display(),
        looked_for.join(", ")
    )]
    NotFound {
        /// The folder searched.
        dir: PathBuf,
        /// What was missing, in words.
        what: String,
        /// Every file name that would have been accepted.
        looked_for: Vec<String>,
        /// What the folder does hold, in words.
        present: String,
    },
    /// Settings that cannot produce a dataset (no file involved).
    #[error("{source_name}: {problem}; {fix}")]
    Settings {
        /// Which generator or built-in set.
        source_name: String,
        /// The setting at fault, named as the generator's parameter (`samples`, `features`, `classes`, `noise`).
        setting: &'static str,
        /// What is wrong.
        problem: String,
        /// What to do about it.
        fix: String,
    },
}

/// What the targets are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// Integer class ids.
    Classification,
    /// Real-valued targets.
    Regression,
}

/// A CSV column, by header name or by 0-based index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColumnRef {
    /// The column whose header is this name (needs a header row).
    Name(String),
    /// The column at this 0-based index.
    Index(usize),
}

impl fmt::Display for ColumnRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnRef::Name(name) => write!(f, "{name:?}"),
            ColumnRef::Index(index) => write!(f, "index {index}"),
        }
    }
}

impl From<&str> for ColumnRef {
    fn from(name: &str) -> Self {
        ColumnRef::Name(name.to_owned())
    }
}

impl From<usize> for ColumnRef {
    fn from(index: usize) -> Self {
        ColumnRef::Index(index)
    }
}

/// How to read a CSV file.
#[derive(Clone, Debug)]
pub struct CsvSpec<'a> {
    /// The target column.
    pub target: ColumnRef,
    /// Feature columns in order; `None` means every column but the target.
    pub features: Option<Vec<ColumnRef>>,
    /// Whether the first row holds column names.
    pub has_header: bool,
    /// Field delimiter, e.g. `b','` or `b'\t'`.
    pub delimiter: u8,
    /// How to read the target column.
    pub task: Task,
    /// The class names of the training data, so that a validation file maps string labels to
    /// the same ids. When given, every label must be one of them (integer-looking labels too).
    pub known_classes: Option<&'a [String]>,
}

impl CsvSpec<'_> {
    /// A comma-separated file with a header row, every other column a feature.
    pub fn new(target: ColumnRef, task: Task) -> Self {
        CsvSpec { target, features: None, has_header: true, delimiter: b',', task, known_classes: None }
    }
}

// ---------------------------------------------------------------------------------------------
// Embedded digits
// ---------------------------------------------------------------------------------------------

/// scikit-learn 1.7.2's `digits.csv.gz`; see `bz-host/data/README.md` for origin and licence.
const DIGITS_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");
const DIGITS_NAME: &str = "digits.csv.gz (embedded in bz)";
const DIGITS_PIXELS: usize = 64;
const DIGITS_MAX_PIXEL: f32 = 16.0;

/// scikit-learn's bundled 8x8 digits (1,797 samples, 10 classes), embedded in the binary:
/// shape `[1, 8, 8]`, pixels scaled from `0..=16` to `[0, 1]`.
pub fn digits() -> Result<RawSet, DataError> {
    let path = Path::new(DIGITS_NAME);
    let spec = CsvSpec {
        target: ColumnRef::Index(DIGITS_PIXELS),
        features: None,
        has_header: false,
        delimiter: b',',
        task: Task::Classification,
        known_classes: None,
    };
    let mut set = read_csv(MultiGzDecoder::new(DIGITS_GZ), path, &spec)?;
    if set.sample_len() != DIGITS_PIXELS {
        return Err(invalid(
            path,
            Location::File,
            format!("has {} pixels per row, expected {DIGITS_PIXELS}", set.sample_len()),
            "this build of bz is broken; rebuild it from a clean checkout",
        ));
    }
    for pixel in &mut set.features {
        *pixel /= DIGITS_MAX_PIXEL;
    }
    set.shape = vec![1, 8, 8];
    Ok(set)
}

// ---------------------------------------------------------------------------------------------
// IDX (MNIST-style)
// ---------------------------------------------------------------------------------------------

/// The first bytes of a gzip stream: IDX files are read gzipped or not, whatever their name says.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// The magic number of an IDX file of unsigned-byte images (3 dimensions), and its header's length.
pub const IDX_IMAGES_MAGIC: u32 = 2051;
const IDX_LABELS_MAGIC: u32 = 2049;
pub const IDX_IMAGES_HEADER: usize = 16;
const IDX_LABELS_HEADER: usize = 8;

/// A file's bytes: read into memory, or memory-mapped to stream.
pub(super) enum Bytes {
    Owned(Vec<u8>),
    Mapped(memmap2::Mmap),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            Bytes::Mapped(m) => m,
        }
    }
}

/// The bytes of an IDX file, decompressed if it was gzipped.
pub(super) struct IdxFile<'p> {
    pub(super) path: &'p Path,
    pub(super) bytes: Bytes,
    gzipped: bool,
}

impl IdxFile<'_> {
    fn read(path: &Path) -> Result<IdxFile<'_>, DataError> {
        let raw = fs::read(path).map_err(|error| read_error(path, error))?;
        if !raw.starts_with(&GZIP_MAGIC) {
            return Ok(IdxFile { path, bytes: Bytes::Owned(raw), gzipped: false });
        }
        let mut bytes = Vec::new();
        MultiGzDecoder::new(raw.as_slice()).read_to_end(&mut bytes).map_err(|error| {
            invalid(
                path,
                Location::File,
                format!("is gzip-compressed but does not decompress: {error}"),
                "the file is probably truncated or corrupt; download it again",
            )
        })?;
        Ok(IdxFile { path, bytes: Bytes::Owned(bytes), gzipped: true })
    }

    /// The file memory-mapped, to stream: a gzipped file cannot be, as its samples are not at fixed offsets.
    pub(super) fn map(path: &Path) -> Result<IdxFile<'_>, DataError> {
        let map = map_file(path)?;
        if map.starts_with(&GZIP_MAGIC) {
            return Err(invalid(
                path,
                Location::File,
                "is gzip-compressed, so it cannot be streamed".to_owned(),
                "decompress it (gunzip -k FILE) next to the .gz, or set data.stream = false",
            ));
        }
        Ok(IdxFile { path, bytes: Bytes::Mapped(map), gzipped: false })
    }

    /// "N bytes", saying when that is the decompressed size so offsets make sense.
    fn size_words(&self, n: usize) -> String {
        if self.gzipped {
            format!("{n} bytes after decompression")
        } else {
            format!("{n} bytes")
        }
    }

    /// Big-endian u32 field; callers check the header length first.
    fn be_u32(&self, offset: usize) -> Result<usize, DataError> {
        self.need(offset + 4, "an IDX header")?;
        let field = &self.bytes[offset..offset + 4];
        let value = u32::from_be_bytes([field[0], field[1], field[2], field[3]]);
        usize::try_from(value).map_err(|_| {
            invalid(
                self.path,
                Location::Byte(offset as u64),
                format!("holds {value}, too large for this machine"),
                "the file is not a valid IDX file; download it again",
            )
        })
    }

    fn need(&self, expected: usize, what: &str) -> Result<(), DataError> {
        if self.bytes.len() >= expected {
            return Ok(());
        }
        Err(self.truncated(expected, what))
    }

    fn truncated(&self, expected: usize, what: &str) -> DataError {
        invalid(
            self.path,
            Location::File,
            format!("is truncated: expected {expected} bytes ({what}), but the file has {}", self.size_words(self.bytes.len())),
            "the download was probably cut short; download the file again",
        )
    }

    fn check_magic(&self, expected: u32, kind: &str) -> Result<(), DataError> {
        self.need(4, "the IDX magic number")?;
        let found = self.be_u32(0)?;
        if found == expected as usize {
            return Ok(());
        }
        let other = if expected == IDX_IMAGES_MAGIC { IDX_LABELS_MAGIC } else { IDX_IMAGES_MAGIC };
        let (problem, fix) = if found == other as usize {
            (
                format!(
                    "is an IDX {} file (magic {found}), but an {kind} file (magic {expected}) was expected",
                    if kind == "images" { "labels" } else { "images" }
                ),
                "the images and labels files are swapped; pass the `-images-idx3-ubyte` file as images and the `-labels-idx1-ubyte` file as labels".to_owned(),
            )
        } else if self.bytes[..2] != [0, 0] {
            (
                format!(
                    "does not start with an IDX header (its first bytes are {:02x} {:02x} {:02x} {:02x})",
                    self.bytes[0], self.bytes[1], self.bytes[2], self.bytes[3]
                ),
                "give an MNIST-style IDX file, gzipped or not".to_owned(),
            )
        } else {
            (
                format!(
                    "has IDX magic {found} (element type 0x{:02x}, {} dimensions), but an {kind} file needs magic {expected}",
                    self.bytes[2], self.bytes[3]
                ),
                "only unsigned-byte IDX files are supported: images with 3 dimensions, labels with 1".to_owned(),
            )
        };
        Err(invalid(self.path, Location::Byte(0), problem, fix))
    }

    /// The file must be exactly as long as its header says: shorter means a cut-off download,
    /// longer means the header and data disagree.
    fn check_len(&self, expected: Option<usize>, what: &str) -> Result<(), DataError> {
        let actual = self.bytes.len();
        let Some(expected) = expected else {
            return Err(invalid(
                self.path,
                Location::Byte(4),
                format!("has a header describing {what}, more than this machine can address"),
                "the header is corrupt; download the file again",
            ));
        };
        if actual < expected {
            return Err(self.truncated(expected, what));
        }
        if actual > expected {
            return Err(invalid(
                self.path,
                Location::Byte(expected as u64),
                format!(
                    "has {} more bytes than the {what} its header describes (expected {expected} bytes, found {})",
                    actual - expected,
                    self.size_words(actual)
                ),
                "the header and the data disagree; the file is corrupt or not an IDX file, so download it again",
            ));
        }
        Ok(())
    }
}

/// Memory-maps a file for reading.
pub(super) fn map_file(path: &Path) -> Result<memmap2::Mmap, DataError> {
    let file = File::open(path).map_err(|error| read_error(path, error))?;
    // SAFETY: the map is read-only; a file changed by another process while bz trains on it could give torn
    // samples, as reading it would, but every offset into the map is checked against its length first.
    unsafe { memmap2::Mmap::map(&file) }.map_err(|error| read_error(path, error))
}

/// The header of an IDX images file, checked against the file's length.
pub(super) struct IdxHeader {
    pub(super) count: usize,
    pub(super) rows: usize,
    pub(super) cols: usize,
}

pub(super) fn parse_idx_header(file: &IdxFile) -> Result<IdxHeader, DataError> {
    file.check_magic(IDX_IMAGES_MAGIC, "images")?;
    file.need(IDX_IMAGES_HEADER, "the 16-byte header of an IDX images file")?;
    let count = file.be_u32(4)?;
    let rows = file.be_u32(8)?;
    let cols = file.be_u32(12)?;
    let expected = count.checked_mul(rows).and_then(|n| n.checked_mul(cols)).and_then(|n| n.checked_add(IDX_IMAGES_HEADER));
    file.check_len(expected, &format!("{count} images of {rows}x{cols} pixels"))?;
    Ok(IdxHeader { count, rows, cols })
}

/// Pixels scaled to `[0, 1]`: the one conversion of IDX pixels, in memory or streamed.
pub(super) fn idx_pixels(bytes: &[u8], out: &mut [f32]) {
    out.iter_mut().zip(bytes).for_each(|(o, &p)| *o = f32::from(p) / 255.0);
}

pub(super) fn parse_idx_labels(file: &IdxFile) -> Result<Vec<i64>, DataError> {
    file.check_magic(IDX_LABELS_MAGIC, "labels")?;
    file.need(IDX_LABELS_HEADER, "the 8-byte header of an IDX labels file")?;
    let count = file.be_u32(4)?;
    file.check_len(count.checked_add(IDX_LABELS_HEADER), &format!("{count} labels"))?;
    Ok(file.bytes[IDX_LABELS_HEADER..].iter().map(|&l| i64::from(l)).collect())
}

/// MNIST-style IDX pair (images magic 2051, labels magic 2049), each gzipped or not (told by
/// the gzip magic bytes, not the name). Pixels scaled from `0..=255` to `[0, 1]`; shape
/// `[1, rows, cols]`.
pub fn idx_pair(images: &Path, labels: &Path) -> Result<RawSet, DataError> {
    let image_file = IdxFile::read(images)?;
    let header = parse_idx_header(&image_file)?;
    let mut pixels = vec![0f32; image_file.bytes.len() - IDX_IMAGES_HEADER];
    idx_pixels(&image_file.bytes[IDX_IMAGES_HEADER..], &mut pixels);
    drop(image_file);
    let classes = idx_labels_for(images, labels, header.count)?;
    Ok(RawSet { features: pixels, shape: vec![1, header.rows, header.cols], targets: Targets::Classes(classes), class_names: None })
}

/// The labels file of an images file of `count` images, which must hold as many labels.
pub(super) fn idx_labels_for(images: &Path, labels: &Path, count: usize) -> Result<Vec<i64>, DataError> {
    let classes = parse_idx_labels(&IdxFile::read(labels)?)?;
    if classes.len() != count {
        return Err(invalid(
            labels,
            Location::File,
            format!("holds {} labels, but the images file {} holds {count} images", classes.len(), images.display()),
            "use the labels file that belongs with these images (train with train, t10k with t10k)",
        ));
    }
    if count == 0 {
        return Err(invalid(images, Location::File, "holds no images".to_owned(), "give a non-empty IDX file"));
    }
    Ok(classes)
}

/// The file names accepted for one half of an IDX pair, in order of preference.
fn idx_names(prefix: &str, kind: &str, dims: u8) -> [String; 4] {
    [
        format!("{prefix}-{kind}-idx{dims}-ubyte"),
        format!("{prefix}-{kind}-idx{dims}-ubyte.gz"),
        format!("{prefix}-{kind}.idx{dims}-ubyte"),
        format!("{prefix}-{kind}.idx{dims}-ubyte.gz"),
    ]
}

fn first_existing(dir: &Path, names: &[String]) -> Option<PathBuf> {
    names.iter().map(|name| dir.join(name)).find(|path| path.is_file())
}

/// A short list of what a folder holds, for "not found" messages.
fn describe_dir(dir: &Path) -> String {
    const SHOWN: usize = 12;
    let Ok(entries) = fs::read_dir(dir) else {
        return "the folder cannot be listed".to_owned();
    };
    let mut names: Vec<String> = entries.filter_map(Result::ok).map(|entry| entry.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    match names.len() {
        0 => "the folder is empty".to_owned(),
        n if n <= SHOWN => format!("the folder holds: {}", names.join(", ")),
        n => format!("the folder holds {n} entries, among them: {}", names[..SHOWN].join(", ")),
    }
}

/// Finds `{prefix}-images-idx3-ubyte[.gz]` and `{prefix}-labels-idx1-ubyte[.gz]` in `dir`
/// (prefix `train` or `t10k` for MNIST), also accepting the `.idx3-ubyte` spelling, and reads
/// them with [`idx_pair`].
pub fn idx_dir(dir: &Path, prefix: &str) -> Result<RawSet, DataError> {
    let (images, labels) = idx_paths(dir, prefix)?;
    idx_pair(&images, &labels)
}

/// The images and labels files of `prefix` in an IDX folder.
pub(super) fn idx_paths(dir: &Path, prefix: &str) -> Result<(PathBuf, PathBuf), DataError> {
    if !dir.is_dir() {
        let problem = if dir.exists() { "is not a folder" } else { "does not exist" };
        return Err(invalid(dir, Location::File, problem.to_owned(), "point the dataset path at the folder that holds the MNIST-style IDX files"));
    }
    let image_names = idx_names(prefix, "images", 3);
    let label_names = idx_names(prefix, "labels", 1);
    let images = first_existing(dir, &image_names);
    let labels = first_existing(dir, &label_names);
    match (images, labels) {
        (Some(images), Some(labels)) => Ok((images, labels)),
        (images, labels) => {
            let mut looked_for = Vec::new();
            let mut missing = Vec::new();
            if images.is_none() {
                looked_for.extend(image_names);
                missing.push(format!("the {prefix} images"));
            }
            if labels.is_none() {
                looked_for.extend(label_names);
                missing.push(format!("the {prefix} labels"));
            }
            Err(DataError::NotFound { dir: dir.to_owned(), what: missing.join(" or "), looked_for, present: describe_dir(dir) })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------------------------

/// Which columns of a CSV file are read, resolved from a [`CsvSpec`].
struct Layout {
    width: usize,
    target: usize,
    features: Vec<usize>,
    header: Option<Vec<String>>,
}

impl Layout {
    /// A column as people should see it in a message.
    fn column(&self, index: usize) -> String {
        match self.header.as_ref().and_then(|names| names.get(index)) {
            Some(name) => format!("{name:?} (index {index})"),
            None => format!("index {index}"),
        }
    }
}

/// Column names of a header, for messages.
fn list_columns(header: &[String]) -> String {
    header.iter().map(|name| format!("{name:?}")).collect::<Vec<_>>().join(", ")
}

/// Advice when a file seems to have been split on the wrong character.
fn delimiter_hint(width: usize, sample: &[String]) -> &'static str {
    let suspicious = sample.iter().any(|field| field.contains([';', '\t', '|']));
    if width == 1 && suspicious {
        "; the file was read as a single column, so check the delimiter"
    } else {
        ""
    }
}

pub(super) fn resolve_column(path: &Path, column: &ColumnRef, width: usize, header: Option<&[String]>, role: &str) -> Result<usize, DataError> {
    match column {
        ColumnRef::Index(index) if *index < width => Ok(*index),
        ColumnRef::Index(index) => Err(invalid(
            path,
            Location::Line(1),
            format!("has {width} columns (indices 0 to {}), so there is no {role} column at index {index}", width.saturating_sub(1)),
            format!("use a 0-based index below {width}{}", delimiter_hint(width, header.unwrap_or(&[]))),
        )),
        ColumnRef::Name(name) => resolve_name(path, name, header, role),
    }
}

fn resolve_name(path: &Path, name: &str, header: Option<&[String]>, role: &str) -> Result<usize, DataError> {
    let Some(header) = header else {
        return Err(invalid(
            path,
            Location::File,
            format!("the {role} column is named {name:?}, but the file is read without a header row"),
            "refer to columns by 0-based index, or read the file with its header row",
        ));
    };
    let matches: Vec<usize> = (0..header.len()).filter(|&i| header[i] == name).collect();
    match matches.as_slice() {
        [index] => Ok(*index),
        [] => Err(invalid(
            path,
            Location::Line(1),
            format!("has no {role} column named {name:?}; its columns are {}", list_columns(header)),
            format!("use one of those names (they are case-sensitive) or a 0-based index{}", delimiter_hint(header.len(), header)),
        )),
        several => Err(invalid(
            path,
            Location::Line(1),
            format!("has {} columns named {name:?} (indices {several:?})", several.len()),
            "refer to the one you mean by its 0-based index",
        )),
    }
}

fn resolve_layout(path: &Path, spec: &CsvSpec, width: usize, header: Option<Vec<String>>) -> Result<Layout, DataError> {
    let names = header.as_deref();
    let target = resolve_column(path, &spec.target, width, names, "target")?;
    let features = match &spec.features {
        None => (0..width).filter(|&i| i != target).collect(),
        Some(columns) => columns.iter().map(|column| resolve_column(path, column, width, names, "feature")).collect::<Result<Vec<_>, _>>()?,
    };
    let layout = Layout { width, target, features, header };
    check_features(path, &layout)?;
    Ok(layout)
}

fn check_features(path: &Path, layout: &Layout) -> Result<(), DataError> {
    if layout.features.is_empty() {
        return Err(invalid(
            path,
            Location::Line(1),
            "leaves no feature columns besides the target".to_owned(),
            "the file needs at least one numeric feature column, or list the feature columns to use",
        ));
    }
    if layout.features.contains(&layout.target) {
        return Err(invalid(
            path,
            Location::Line(1),
            format!("lists the target column {} among the features", layout.column(layout.target)),
            "remove the target from the feature columns: the model would be handed the answer",
        ));
    }
    let mut seen = BTreeSet::new();
    if let Some(twice) = layout.features.iter().find(|&&i| !seen.insert(i)) {
        return Err(invalid(
            path,
            Location::Line(1),
            format!("lists the feature column {} more than once", layout.column(*twice)),
            "list each feature column once",
        ));
    }
    Ok(())
}

/// Why a CSV cell is not a usable number.
enum BadNumber {
    Empty,
    NotFinite,
    NotANumber,
}

fn parse_number(text: &str) -> Result<f32, BadNumber> {
    if text.is_empty() {
        return Err(BadNumber::Empty);
    }
    match text.parse::<f32>() {
        Ok(value) if value.is_finite() => Ok(value),
        Ok(_) => Err(BadNumber::NotFinite),
        Err(_) => Err(BadNumber::NotANumber),
    }
}

/// A numeric CSV cell; the column is described only on failure, as that takes an allocation.
fn parse_cell(path: &Path, line: u64, column: impl FnOnce() -> String, text: &str, role: &str) -> Result<f32, DataError> {
    let bad = match parse_number(text) {
        Ok(value) => return Ok(value),
        Err(bad) => bad,
    };
    let (problem, fix) = match bad {
        BadNumber::Empty => ("the value is empty (missing data)".to_owned(), "fill in or drop rows with missing values".to_owned()),
        BadNumber::NotFinite => (format!("{text:?} is not a finite number"), "replace NaN and infinite values, or drop those rows".to_owned()),
        BadNumber::NotANumber if role == "target" => {
            (format!("{text:?} is not a number"), "regression targets must be numeric; for labels, train a classification task".to_owned())
        }
        BadNumber::NotANumber => (
            format!("{text:?} is not a number"),
            "every feature column must be numeric: encode or drop text columns, or list the numeric feature columns to use".to_owned(),
        ),
    };
    let at = Location::Cell { line, column: column() };
    Err(invalid(path, at, problem, fix))
}

pub(super) fn csv_error(path: &Path, error: csv::Error) -> DataError {
    let at = error.position().map_or(Location::File, |p| Location::Line(p.line()));
    let problem = match error.kind() {
        csv::ErrorKind::Utf8 { err, .. } => format!("field {} is not valid UTF-8", err.field() + 1),
        _ => format!("is not readable as CSV: {error}"),
    };
    if let csv::ErrorKind::Io(_) = error.kind() {
        if let csv::ErrorKind::Io(io_error) = error.into_kind() {
            return read_error(path, io_error);
        }
    }
    let fix = if problem.contains("UTF-8") { "save the file as UTF-8" } else { "check that the file is CSV and the delimiter is right" };
    invalid(path, at, problem, fix)
}

/// Rows read so far; the target column is kept as text until its type is known.
struct CsvRows {
    features: Vec<f32>,
    labels: Vec<(u64, String)>,
}

fn read_row(path: &Path, layout: &Layout, record: &csv::StringRecord, rows: &mut CsvRows) -> Result<(), DataError> {
    let line = record.position().map_or(0, csv::Position::line);
    if record.len() != layout.width {
        let reference = if layout.header.is_some() { "the header" } else { "the first row" };
        return Err(invalid(
            path,
            Location::Line(line),
            format!("has {} fields, but {reference} has {}", record.len(), layout.width),
            "every row needs the same number of fields; look for a missing or extra delimiter",
        ));
    }
    for &index in &layout.features {
        let column = || layout.column(index);
        let value = parse_cell(path, line, column, &record[index], "feature")?;
        rows.features.push(value);
    }
    rows.labels.push((line, record[layout.target].to_owned()));
    Ok(())
}

fn read_csv<R: Read>(source: R, path: &Path, spec: &CsvSpec) -> Result<RawSet, DataError> {
    let mut reader = csv::ReaderBuilder::new().has_headers(spec.has_header).delimiter(spec.delimiter).flexible(true).trim(csv::Trim::All).from_reader(source);
    let header = if spec.has_header {
        let names = reader.headers().map_err(|e| csv_error(path, e))?;
        Some(names.iter().map(str::to_owned).collect::<Vec<_>>())
    } else {
        None
    };
    let mut layout = match &header {
        Some(names) if !names.is_empty() => Some(resolve_layout(path, spec, names.len(), header.clone())?),
        _ => None,
    };
    let mut rows = CsvRows { features: Vec::new(), labels: Vec::new() };
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(path, e))?;
        // Without a header the first row decides how many columns there are.
        let layout = match &mut layout {
            Some(layout) => &*layout,
            empty => &*empty.insert(resolve_layout(path, spec, record.len(), None)?),
        };
        read_row(path, layout, &record, &mut rows)?;
    }
    let Some(layout) = layout else {
        return Err(invalid(path, Location::File, "is empty".to_owned(), "give a CSV file with data rows"));
    };
    if rows.labels.is_empty() {
        return Err(invalid(path, Location::File, "has a header row but no data rows".to_owned(), "give a CSV file with data rows"));
    }
    let target_column = layout.column(layout.target);
    let (targets, class_names) = csv_targets(path, &target_column, spec, &rows.labels)?;
    Ok(RawSet { features: rows.features, shape: vec![layout.features.len()], targets, class_names })
}

/// CSV with or without a header row: the target column by name or 0-based index, the features
/// the other columns (or `spec.features`), all numeric.
///
/// Classification: integer labels (`3`, also `3.0`) are used as class ids when all of them are
/// integers `>= 0`; otherwise labels are mapped to their sorted unique names, returned in
/// `class_names`. With `spec.known_classes` every label is looked up in that list instead, so a
/// validation file gets the training file's ids. Regression: the target is parsed as `f32`
/// (width 1).
pub fn csv(path: &Path, spec: &CsvSpec) -> Result<RawSet, DataError> {
    // No BufReader: the csv reader buffers on its own.
    let file = File::open(path).map_err(|error| read_error(path, error))?;
    read_csv(file, path, spec)
}

pub(super) type CsvTargets = (Targets, Option<Vec<String>>);

pub(super) fn csv_targets(path: &Path, column: &str, spec: &CsvSpec, labels: &[(u64, String)]) -> Result<CsvTargets, DataError> {
    if spec.task == Task::Regression {
        let data = labels.iter().map(|(line, text)| parse_cell(path, *line, || column.to_owned(), text, "target")).collect::<Result<Vec<_>, _>>()?;
        return Ok((Targets::Values { data, width: 1 }, None));
    }
    if let Some((line, _)) = labels.iter().find(|(_, text)| text.is_empty()) {
        return Err(invalid(
            path,
            Location::Cell { line: *line, column: column.to_owned() },
            "the class label is empty".to_owned(),
            "fill in or drop rows without a label",
        ));
    }
    if let Some(known) = spec.known_classes {
        return known_class_ids(path, column, known, labels);
    }
    let ids: Option<Vec<i64>> = labels.iter().map(|(_, text)| integer_class(text)).collect();
    if let Some(ids) = ids {
        return Ok((Targets::Classes(ids), None));
    }
    let names: Vec<String> = labels.iter().map(|(_, text)| text.as_str()).collect::<BTreeSet<_>>().into_iter().map(str::to_owned).collect();
    known_class_ids(path, column, &names, labels)
}

/// A label that can serve as a class id as it stands: an integer >= 0, also written `3.0`.
fn integer_class(text: &str) -> Option<i64> {
    // Bounded so that a float label cannot overflow i64 or make a silly class count.
    const MAX_ID: f64 = (1u64 << 31) as f64;
    if let Ok(id) = text.parse::<i64>() {
        return (id >= 0).then_some(id);
    }
    let value = text.parse::<f64>().ok()?;
    let integral = value.fract() == 0.0 && (0.0..MAX_ID).contains(&value);
    integral.then_some(value as i64)
}

fn known_class_ids(path: &Path, column: &str, names: &[String], labels: &[(u64, String)]) -> Result<CsvTargets, DataError> {
    let index: HashMap<&str, i64> = names.iter().enumerate().map(|(id, name)| (name.as_str(), id as i64)).collect();
    let ids = labels
        .iter()
        .map(|(line, text)| index.get(text.as_str()).copied().ok_or_else(|| unknown_label(path, *line, column, text, names)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((Targets::Classes(ids), Some(names.to_vec())))
}

fn unknown_label(path: &Path, line: u64, column: &str, label: &str, names: &[String]) -> DataError {
    const SHOWN: usize = 20;
    let mut shown = list_columns(&names[..names.len().min(SHOWN)]);
    if names.len() > SHOWN {
        shown.push_str(", ...");
    }
    invalid(
        path,
        Location::Cell { line, column: column.to_owned() },
        format!("class {label:?} is not one of the {} classes of the training data ({shown})", names.len()),
        "drop rows of classes the model was not trained on, or add examples of this class to the training data",
    )
}

// ---------------------------------------------------------------------------------------------
// safetensors
// ---------------------------------------------------------------------------------------------

/// A safetensors file holding a features tensor (any integer or float dtype, converted to
/// `f32`; shape `[N, ...]`, and `[N]` is taken as one feature per sample) and a targets tensor.
///
/// Classification needs integer targets of shape `[N]` (class ids `>= 0`). Regression takes
/// float or integer targets of shape `[N]` (width 1) or `[N, W]`.
pub fn safetensors(path: &Path, features_key: &str, targets_key: &str, task: Task) -> Result<RawSet, DataError> {
    let bytes = fs::read(path).map_err(|error| read_error(path, error))?;
    let file = parse_safetensors(path, &bytes)?;
    let (features, parts) = safetensors_parts(path, &file, features_key, targets_key, task)?;
    let data = tensor_f32(path, features_key, &features)?;
    Ok(RawSet { features: data, shape: parts.shape, targets: parts.targets, class_names: None })
}

/// A safetensors file's header, checked by the safetensors library against the file's length (offsets inside the
/// data, sizes that match shapes and dtypes, no overflow).
pub(super) fn parse_safetensors<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>, DataError> {
    SafeTensors::deserialize(bytes).map_err(|error| {
        invalid(
            path,
            Location::File,
            format!("is not a valid safetensors file: {error}"),
            "write it with the safetensors library (e.g. safetensors.torch.save_file)",
        )
    })
}

/// The per-sample shape and targets of a safetensors set.
pub(super) struct SafetensorsParts {
    pub(super) count: usize,
    pub(super) shape: Vec<usize>,
    pub(super) targets: Targets,
}

/// The features tensor (not converted) and the shape and targets, checked against each other.
pub(super) fn safetensors_parts<'a>(
    path: &Path,
    file: &SafeTensors<'a>,
    features_key: &str,
    targets_key: &str,
    task: Task,
) -> Result<(TensorView<'a>, SafetensorsParts), DataError> {
    let features = find_tensor(path, file, features_key, "features")?;
    let targets = find_tensor(path, file, targets_key, "targets")?;
    let (count, shape) = match features.shape() {
        [] => {
            return Err(invalid(
                path,
                Location::File,
                format!("features tensor {features_key:?} is a scalar, but it needs shape [N, ...]"),
                "store one row per sample, shape [N, ...]",
            ))
        }
        [count] => (*count, vec![1]),
        [count, rest @ ..] => (*count, rest.to_vec()),
    };
    check_count(path, features_key, targets_key, count, targets.shape())?;
    if !matches!(
        features.dtype(),
        Dtype::F32
            | Dtype::F64
            | Dtype::F16
            | Dtype::BF16
            | Dtype::BOOL
            | Dtype::U8
            | Dtype::I8
            | Dtype::I16
            | Dtype::U16
            | Dtype::I32
            | Dtype::U32
            | Dtype::I64
            | Dtype::U64
    ) {
        return Err(unsupported_dtype(path, features_key, features.dtype()));
    }
    let targets = match task {
        Task::Classification => Targets::Classes(class_tensor(path, targets_key, &targets)?),
        Task::Regression => value_tensor(path, targets_key, &targets)?,
    };
    Ok((features, SafetensorsParts { count, shape, targets }))
}

fn find_tensor<'a>(path: &Path, file: &SafeTensors<'a>, key: &str, role: &str) -> Result<TensorView<'a>, DataError> {
    file.tensor(key).map_err(|_| {
        let mut present: Vec<String> = file.iter().map(|(name, view)| format!("{name:?} ({:?} {:?})", view.dtype(), view.shape())).collect();
        present.sort();
        let present = if present.is_empty() { "none".to_owned() } else { present.join(", ") };
        invalid(
            path,
            Location::File,
            format!("has no {role} tensor named {key:?}; the tensors it holds are {present}"),
            format!("set the {role} key to one of those names"),
        )
    })
}

fn check_count(path: &Path, features_key: &str, targets_key: &str, count: usize, target_shape: &[usize]) -> Result<(), DataError> {
    if count == 0 {
        return Err(invalid(path, Location::File, format!("features tensor {features_key:?} holds no samples (N = 0)"), "store at least one sample"));
    }
    match target_shape.first() {
        Some(&n) if n == count => Ok(()),
        found => Err(invalid(
            path,
            Location::File,
            format!(
                "features tensor {features_key:?} has {count} samples but targets tensor {targets_key:?} has {} (shape {target_shape:?})",
                found.map_or("none".to_owned(), usize::to_string)
            ),
            "store one target per sample: the first dimension of both tensors must match",
        )),
    }
}

/// Copies fixed-size little-endian elements out of a possibly unaligned byte buffer.
fn le_elements<const N: usize>(data: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    data.chunks_exact(N).map(|chunk| {
        let mut element = [0u8; N];
        element.copy_from_slice(chunk);
        element
    })
}

/// IEEE half precision to single; exact, since every f16 is representable as an f32.
fn f16_to_f32(half: u16) -> f32 {
    let sign = if half & 0x8000 == 0 { 1.0 } else { -1.0 };
    let exponent = i32::from((half >> 10) & 0x1f);
    let mantissa = f32::from(half & 0x3ff);
    match exponent {
        0 => sign * mantissa * 2f32.powi(-24),
        0x1f if mantissa == 0.0 => sign * f32::INFINITY,
        0x1f => f32::NAN,
        _ => sign * (1.0 + mantissa / 1024.0) * 2f32.powi(exponent - 15),
    }
}

fn unsupported_dtype(path: &Path, key: &str, dtype: Dtype) -> DataError {
    invalid(
        path,
        Location::File,
        format!("tensor {key:?} has dtype {dtype:?}, which bz cannot read"),
        "store it as float32, float64, float16, bfloat16, bool or an 8- to 64-bit integer type",
    )
}

/// Any integer or float tensor as f32, refusing NaN and infinities that would poison training.
fn tensor_f32(path: &Path, key: &str, view: &TensorView) -> Result<Vec<f32>, DataError> {
    let values = values_f32(path, key, view.dtype(), view.data())?;
    check_finite(path, key, &values, "of the flattened tensor", 0)?;
    Ok(values)
}

/// Elements of `dtype` as f32: the one conversion of safetensors features, in memory or streamed.
pub(super) fn values_f32(path: &Path, key: &str, dtype: Dtype, data: &[u8]) -> Result<Vec<f32>, DataError> {
    Ok(match dtype {
        Dtype::F32 => le_elements(data).map(f32::from_le_bytes).collect(),
        Dtype::F64 => le_elements(data).map(|b| f64::from_le_bytes(b) as f32).collect(),
        Dtype::F16 => le_elements(data).map(|b| f16_to_f32(u16::from_le_bytes(b))).collect(),
        Dtype::BF16 => le_elements(data).map(|b| f32::from_bits(u32::from(u16::from_le_bytes(b)) << 16)).collect(),
        _ => integer_elements(path, key, dtype, data)?.into_iter().map(|v| v as f32).collect(),
    })
}

/// Refuses a NaN or infinity; `what` and `offset` place the first one (`"of the flattened tensor"`, element 0).
pub(super) fn check_finite(path: &Path, key: &str, values: &[f32], what: &str, offset: usize) -> Result<(), DataError> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(bad) => Err(invalid(
            path,
            Location::File,
            format!("tensor {key:?} holds a NaN or infinite value (element {} {what})", bad + offset),
            "replace or drop non-finite values before saving",
        )),
    }
}

/// Integer (and bool) tensors widened to i128, so every source type fits before range checks.
fn integer_elements(path: &Path, key: &str, dtype: Dtype, data: &[u8]) -> Result<Vec<i128>, DataError> {
    Ok(match dtype {
        Dtype::BOOL => data.iter().map(|&b| i128::from(b != 0)).collect(),
        Dtype::U8 => data.iter().map(|&b| i128::from(b)).collect(),
        Dtype::I8 => data.iter().map(|&b| i128::from(b as i8)).collect(),
        Dtype::I16 => le_elements(data).map(|b| i128::from(i16::from_le_bytes(b))).collect(),
        Dtype::U16 => le_elements(data).map(|b| i128::from(u16::from_le_bytes(b))).collect(),
        Dtype::I32 => le_elements(data).map(|b| i128::from(i32::from_le_bytes(b))).collect(),
        Dtype::U32 => le_elements(data).map(|b| i128::from(u32::from_le_bytes(b))).collect(),
        Dtype::I64 => le_elements(data).map(|b| i128::from(i64::from_le_bytes(b))).collect(),
        Dtype::U64 => le_elements(data).map(|b| i128::from(u64::from_le_bytes(b))).collect(),
        other => return Err(unsupported_dtype(path, key, other)),
    })
}

fn is_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64)
}

fn class_tensor(path: &Path, key: &str, view: &TensorView) -> Result<Vec<i64>, DataError> {
    if is_float(view.dtype()) {
        return Err(invalid(
            path,
            Location::File,
            format!("targets tensor {key:?} has dtype {:?}, but classification needs integer class ids", view.dtype()),
            "save the labels as int64 (labels.long() in PyTorch, .astype(np.int64) in NumPy), or train a regression task",
        ));
    }
    if view.shape().len() != 1 {
        return Err(invalid(
            path,
            Location::File,
            format!("targets tensor {key:?} has shape {:?}, but class ids need shape [N]", view.shape()),
            "save one class id per sample as a 1-D tensor (e.g. labels.reshape(-1)); one-hot targets must be turned into ids with argmax",
        ));
    }
    integer_elements(path, key, view.dtype(), view.data())?
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            i64::try_from(id).ok().filter(|id| *id >= 0).ok_or_else(|| {
                invalid(
                    path,
                    Location::File,
                    format!("targets tensor {key:?} holds class id {id} at position {i}; class ids must be 0 or more"),
                    "number the classes 0, 1, 2, ...",
                )
            })
        })
        .collect()
}

fn value_tensor(path: &Path, key: &str, view: &TensorView) -> Result<Targets, DataError> {
    let width = match view.shape() {
        [_] => 1,
        [_, width] if *width > 0 => *width,
        shape => {
            return Err(invalid(
                path,
                Location::File,
                format!("targets tensor {key:?} has shape {shape:?}, but regression targets need shape [N] or [N, W] with W > 0"),
                "save one value, or one row of values, per sample",
            ))
        }
    };
    Ok(Targets::Values { data: tensor_f32(path, key, view)?, width })
}

// ---------------------------------------------------------------------------------------------
// Synthetic
// ---------------------------------------------------------------------------------------------

/// Smallest distance between two blob centres, in units of `noise`. At 4.5 two neighbouring
/// blobs with noise 1.0 overlap by Φ(-2.25) ≈ 1.2%, so a linear model lands around 90–99%
/// depending on how many neighbours each class has, never a trivial 100%.
const BLOB_SEPARATION: f64 = 4.5;
/// Rejected candidates in a row before the box that centres are drawn from grows.
const CENTRE_TRIES: usize = 32;
const CENTRE_GROWTH: f64 = 1.05;
/// Placing centres costs O(classes² · features); this keeps it to a few seconds at most.
const MAX_SYNTHETIC_CLASSES: usize = 10_000;

fn settings_error(setting: &'static str, problem: String, fix: &str) -> DataError {
    DataError::Settings { source_name: "synthetic dataset".to_owned(), setting, problem, fix: fix.to_owned() }
}

fn check_synthetic(task: Task, samples: usize, features: usize, classes: usize, noise: f32) -> Result<(), DataError> {
    if samples == 0 || features == 0 {
        let setting = if samples == 0 { "samples" } else { "features" };
        return Err(settings_error(setting, format!("{samples} samples of {features} features is empty"), "ask for at least 1 sample and 1 feature"));
    }
    if samples.checked_mul(features).is_none_or(|n| n > isize::MAX as usize / 4) {
        return Err(settings_error("samples", format!("{samples} samples of {features} features do not fit in memory"), "ask for fewer samples or features"));
    }
    if !noise.is_finite() || noise < 0.0 {
        return Err(settings_error("noise", format!("noise {noise} is not a finite number >= 0"), "use a noise level such as 1.0"));
    }
    if task == Task::Classification && classes < 2 {
        return Err(settings_error("classes", format!("{classes} classes cannot make a classification task"), "ask for at least 2 classes"));
    }
    if task == Task::Classification && classes > MAX_SYNTHETIC_CLASSES {
        return Err(settings_error("classes", format!("{classes} classes is more than the {MAX_SYNTHETIC_CLASSES} supported"), "ask for fewer classes"));
    }
    if task == Task::Classification && classes > samples {
        return Err(settings_error("classes", format!("{samples} samples cannot cover {classes} classes"), "ask for at least as many samples as classes"));
    }
    Ok(())
}

/// Seeded synthetic data: identical output for the same arguments on every machine.
///
/// Classification: `classes` Gaussian blobs (standard deviation `noise`) in `features`
/// dimensions, labels balanced (counts differ by at most one) and shuffled. Centres are drawn
/// uniformly from a box that starts small and grows until every pair of centres is at least
/// 4.5 apart, so that with `noise = 1.0` a linear model learns them to roughly 90–99%, whatever
/// the dimension. Regression: `x ~ N(0, 1)`, `y = x·w + b + noise·N(0, 1)` with `w` and `b`
/// drawn from `N(0, 1)`; `classes` is ignored.
pub fn synthetic(task: Task, samples: usize, features: usize, classes: usize, noise: f32, seed: u64) -> Result<RawSet, DataError> {
    check_synthetic(task, samples, features, classes, noise)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let noise = f64::from(noise);
    let set = match task {
        Task::Classification => blobs(&mut rng, samples, features, classes, noise),
        Task::Regression => linear(&mut rng, samples, features, noise),
    };
    Ok(set)
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    rng.sample(StandardNormal)
}

/// Squared distances keep the acceptance test to exact IEEE arithmetic, so every machine
/// accepts the same candidates and draws the same stream.
fn far_enough(centres: &[f64], candidate: &[f64]) -> bool {
    let min_sq = BLOB_SEPARATION * BLOB_SEPARATION;
    centres.chunks_exact(candidate.len()).all(|centre| {
        let sq: f64 = centre.iter().zip(candidate).map(|(a, b)| (a - b) * (a - b)).sum();
        sq >= min_sq
    })
}

fn blob_centres(rng: &mut ChaCha8Rng, classes: usize, features: usize) -> Vec<f64> {
    // Start where two random points of the box are typically closer than the separation
    // (their distance is about half_width * sqrt(2 d / 3)), so the box ends up just big
    // enough and neighbouring blobs sit near the separation in any dimension.
    let mut half_width = 0.5 * BLOB_SEPARATION * (1.5 / features as f64).sqrt();
    let mut centres = Vec::with_capacity(classes * features);
    let mut candidate = vec![0.0; features];
    let mut misses = 0;
    while centres.len() < classes * features {
        for x in &mut candidate {
            *x = rng.random_range(-half_width..=half_width);
        }
        if far_enough(&centres, &candidate) {
            centres.extend_from_slice(&candidate);
            misses = 0;
        } else {
            misses += 1;
            if misses == CENTRE_TRIES {
                half_width *= CENTRE_GROWTH;
                misses = 0;
            }
        }
    }
    centres
}

fn blobs(rng: &mut ChaCha8Rng, samples: usize, features: usize, classes: usize, noise: f64) -> RawSet {
    let centres = blob_centres(rng, classes, features);
    let mut labels: Vec<i64> = (0..samples).map(|i| (i % classes) as i64).collect();
    labels.shuffle(rng);
    let mut data = Vec::with_capacity(samples * features);
    for &label in &labels {
        let centre = &centres[label as usize * features..][..features];
        data.extend(centre.iter().map(|c| (c + noise * normal(rng)) as f32));
    }
    RawSet { features: data, shape: vec![features], targets: Targets::Classes(labels), class_names: None }
}

fn linear(rng: &mut ChaCha8Rng, samples: usize, features: usize, noise: f64) -> RawSet {
    let weights: Vec<f64> = (0..features).map(|_| normal(rng)).collect();
    let bias = normal(rng);
    let mut data = Vec::with_capacity(samples * features);
    let mut targets = Vec::with_capacity(samples);
    for _ in 0..samples {
        let x: Vec<f64> = (0..features).map(|_| normal(rng)).collect();
        let y = x.iter().zip(&weights).map(|(a, w)| a * w).sum::<f64>() + bias + noise * normal(rng);
        data.extend(x.iter().map(|&v| v as f32));
        targets.push(y as f32);
    }
    RawSet { features: data, shape: vec![features], targets: Targets::Values { data: targets, width: 1 }, class_names: None }
}

// ---------------------------------------------------------------------------------------------
// Error helpers
// ---------------------------------------------------------------------------------------------

pub(super) fn read_error(path: &Path, error: io::Error) -> DataError {
    DataError::Read { path: path.to_owned(), error }
}

pub(super) fn invalid(path: &Path, at: Location, problem: String, fix: impl Into<String>) -> DataError {
    DataError::Invalid { path: path.to_owned(), at, problem, fix: fix.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_special_values() {
        assert_eq!(f16_to_f32(0x0000), 0.0);
        assert!(f16_to_f32(0x8000).is_sign_negative());
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14));
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn integer_class_labels() {
        assert_eq!(integer_class("0"), Some(0));
        assert_eq!(integer_class("12"), Some(12));
        assert_eq!(integer_class("3.0"), Some(3));
        assert_eq!(integer_class("-1"), None);
        assert_eq!(integer_class("2.5"), None);
        assert_eq!(integer_class("1e12"), None);
        assert_eq!(integer_class("NaN"), None);
        assert_eq!(integer_class("cat"), None);
    }

    #[test]
    fn locations_read_naturally() {
        let cell = Location::Cell { line: 4, column: "\"x\" (index 0)".to_owned() };
        assert_eq!(cell.to_string(), ", line 4, column \"x\" (index 0)");
        assert_eq!(Location::Byte(16).to_string(), ", byte 16");
        assert_eq!(Location::File.to_string(), "");
    }

    #[test]
    fn num_classes_survives_extreme_ids() {
        let set = RawSet { features: vec![0.0], shape: vec![1], targets: Targets::Classes(vec![i64::MAX]), class_names: None };
        assert_eq!(set.num_classes(), Some(i64::MAX as usize + 1));
    }
}
