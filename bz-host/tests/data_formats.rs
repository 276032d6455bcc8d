//! Tests for the pure-Rust dataset readers in `bz_host::data::formats`.
//!
//! Fixtures are written into temporary folders by the tests themselves, so each error path is
//! exercised on a file whose defect is known exactly.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use bz_host::data::formats::{self, digits, idx_dir, idx_pair, synthetic, ColumnRef, CsvSpec, DataError, RawSet, Targets, Task};
use flate2::write::GzEncoder;
use flate2::Compression;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn write(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    fs::write(&path, bytes).unwrap();
    path
}

/// The error's message, after checking that it names `path`.
fn message_naming(error: DataError, path: &Path) -> String {
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "message does not name {}: {message}", path.display());
    message
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "message lacks {part:?}: {message}");
    }
}

fn classes(set: &RawSet) -> &[i64] {
    match &set.targets {
        Targets::Classes(ids) => ids,
        other => panic!("expected classes, got {other:?}"),
    }
}

fn values(set: &RawSet) -> (&[f32], usize) {
    match &set.targets {
        Targets::Values { data, width } => (data, *width),
        other => panic!("expected values, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// IDX
// ---------------------------------------------------------------------------------------------

fn idx_images(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for field in [2051, count, rows, cols] {
        bytes.extend(field.to_be_bytes());
    }
    bytes.extend(pixels);
    bytes
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for field in [2049, labels.len() as u32] {
        bytes.extend(field.to_be_bytes());
    }
    bytes.extend(labels);
    bytes
}

/// Three 2x3 images whose pixels count up from 0, labelled 7, 0, 255.
fn three_images() -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..18).map(|p| p * 15).collect();
    (idx_images(3, 2, 3, &pixels), idx_labels(&[7, 0, 255]))
}

fn assert_three_images(set: &RawSet) {
    assert_eq!(set.len(), 3);
    assert_eq!(set.shape, vec![1, 2, 3]);
    assert_eq!(set.sample_len(), 6);
    assert_eq!(set.features.len(), 18);
    assert_eq!(set.features[0], 0.0);
    assert_eq!(set.features[1], 15.0 / 255.0);
    assert_eq!(set.features[17], 1.0);
    assert_eq!(classes(set), &[7, 0, 255]);
    assert_eq!(set.class_names, None);
}

#[test]
fn idx_pair_reads_plain_files() {
    let dir = TempDir::new().unwrap();
    let (images, labels) = three_images();
    let images = write(&dir, "images", &images);
    let labels = write(&dir, "labels", &labels);
    assert_three_images(&idx_pair(&images, &labels).unwrap());
}

#[test]
fn idx_pair_tells_gzip_by_content_not_name() {
    let dir = TempDir::new().unwrap();
    let (images, labels) = three_images();
    // Gzipped data without .gz, and plain data with .gz: both must load.
    let images = write(&dir, "images-idx3-ubyte", &gzip(&images));
    let labels = write(&dir, "labels-idx1-ubyte.gz", &labels);
    assert_three_images(&idx_pair(&images, &labels).unwrap());
}

#[test]
fn idx_dir_finds_standard_names() {
    let dir = TempDir::new().unwrap();
    let (images, labels) = three_images();
    write(&dir, "train-images-idx3-ubyte.gz", &gzip(&images));
    write(&dir, "train-labels-idx1-ubyte.gz", &gzip(&labels));
    write(&dir, "t10k-images-idx3-ubyte", &idx_images(1, 2, 3, &[255; 6]));
    write(&dir, "t10k-labels-idx1-ubyte", &idx_labels(&[4]));
    assert_three_images(&idx_dir(dir.path(), "train").unwrap());
    let test = idx_dir(dir.path(), "t10k").unwrap();
    assert_eq!(test.len(), 1);
    assert_eq!(classes(&test), &[4]);
    assert_eq!(test.features, vec![1.0; 6]);
}

#[test]
fn idx_dir_accepts_dotted_spelling() {
    let dir = TempDir::new().unwrap();
    let (images, labels) = three_images();
    write(&dir, "train-images.idx3-ubyte", &images);
    write(&dir, "train-labels.idx1-ubyte.gz", &gzip(&labels));
    assert_three_images(&idx_dir(dir.path(), "train").unwrap());
}

#[test]
fn idx_dir_lists_what_it_looked_for() {
    let dir = TempDir::new().unwrap();
    let (images, _) = three_images();
    write(&dir, "train-images-idx3-ubyte.gz", &gzip(&images));
    write(&dir, "notes.txt", b"hello");
    let message = message_naming(idx_dir(dir.path(), "train").unwrap_err(), dir.path());
    assert_mentions(
        &message,
        &["the train labels", "train-labels-idx1-ubyte", "train-labels-idx1-ubyte.gz", "train-labels.idx1-ubyte", "train-labels.idx1-ubyte.gz", "notes.txt"],
    );
    assert!(!message.contains("looked for train-images"), "images were found: {message}");

    let empty = TempDir::new().unwrap();
    let message = message_naming(idx_dir(empty.path(), "t10k").unwrap_err(), empty.path());
    assert_mentions(&message, &["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte", "the folder is empty"]);
}

#[test]
fn idx_dir_rejects_missing_folder() {
    let dir = TempDir::new().unwrap();
    let missing = dir.path().join("nope");
    let message = message_naming(idx_dir(&missing, "train").unwrap_err(), &missing);
    assert_mentions(&message, &["does not exist"]);
}

#[test]
fn idx_truncated_images_name_expected_and_actual_sizes() {
    let dir = TempDir::new().unwrap();
    let (images, labels) = three_images();
    let images = write(&dir, "images", &images[..30]);
    let labels = write(&dir, "labels", &labels);
    let message = message_naming(idx_pair(&images, &labels).unwrap_err(), &images);
    assert_mentions(&message, &["truncated", "3 images of 2x3 pixels", "34 bytes", "30 bytes"]);
}

#[test]
fn idx_truncated_gzipped_labels_say_decompressed_size() {
    let dir = TempDir::new().unwrap();
    let (images, labels) = three_images();
    let images = write(&dir, "images", &images);
    // A well-formed gzip stream whose content lacks the last label.
    let labels = write(&dir, "labels.gz", &gzip(&labels[..10]));
    let message = message_naming(idx_pair(&images, &labels).unwrap_err(), &labels);
    assert_mentions(&message, &["truncated", "3 labels", "11 bytes", "10 bytes after decompression"]);
}

#[test]
fn idx_cut_gzip_stream_is_reported() {
    let dir = TempDir::new().unwrap();
    let (images, labels) = three_images();
    let compressed = gzip(&images);
    let images = write(&dir, "images.gz", &compressed[..compressed.len() / 2]);
    let labels = write(&dir, "labels", &labels);
    let message = message_naming(idx_pair(&images, &labels).unwrap_err(), &images);
    assert_mentions(&message, &["gzip", "does not decompress", "download it again"]);
}

#[test]
fn idx_short_header_is_truncated() {
    let dir = TempDir::new().unwrap();
    let (images, labels) = three_images();
    let images = write(&dir, "images", &images[..10]);
    let labels = write(&dir, "labels", &labels);
    let message = message_naming(idx_pair(&images, &labels).unwrap_err(), &images);
    assert_mentions(&message, &["truncated", "header", "10 bytes"]);
}

#[test]
fn idx_trailing_bytes_are_rejected() {
    let dir = TempDir::new().unwrap();
    let (mut images, labels) = three_images();
    images.extend([0, 0]);
    let images = write(&dir, "images", &images);
    let labels = write(&dir, "labels", &labels);
    let message = message_naming(idx_pair(&images, &labels).unwrap_err(), &images);
    assert_mentions(&message, &["2 more bytes", "expected 34 bytes", "found 36 bytes"]);
}

#[test]
fn idx_count_mismatch_names_both_files() {
    let dir = TempDir::new().unwrap();
    let (images, _) = three_images();
    let images = write(&dir, "images", &images);
    let labels = write(&dir, "labels", &idx_labels(&[1, 2]));
    let message = message_naming(idx_pair(&images, &labels).unwrap_err(), &labels);
    assert_mentions(&message, &["2 labels", "3 images", &images.display().to_string()]);
}

#[test]
fn idx_swapped_files_are_spotted() {
    let dir = TempDir::new().unwrap();
    let (images, labels) = three_images();
    let images = write(&dir, "images", &images);
    let labels = write(&dir, "labels", &labels);
    let message = message_naming(idx_pair(&labels, &images).unwrap_err(), &labels);
    assert_mentions(&message, &["magic 2049", "magic 2051", "swapped"]);
}

#[test]
fn idx_rejects_other_files() {
    let dir = TempDir::new().unwrap();
    let (_, labels) = three_images();
    let text = write(&dir, "readme", b"this is not an IDX file at all");
    let labels = write(&dir, "labels", &labels);
    let message = message_naming(idx_pair(&text, &labels).unwrap_err(), &text);
    assert_mentions(&message, &["does not start with an IDX header", "74 68 69 73"]);

    let floats = write(&dir, "floats", &[0, 0, 0x0d, 3, 0, 0, 0, 0]);
    let message = message_naming(idx_pair(&floats, &labels).unwrap_err(), &floats);
    assert_mentions(&message, &["magic 3331", "element type 0x0d", "unsigned-byte"]);
}

#[test]
fn idx_missing_file_is_named() {
    let dir = TempDir::new().unwrap();
    let missing = dir.path().join("missing-images");
    let message = message_naming(idx_pair(&missing, &missing).unwrap_err(), &missing);
    assert_mentions(&message, &["cannot read"]);
}

#[test]
fn idx_empty_set_is_rejected() {
    let dir = TempDir::new().unwrap();
    let images = write(&dir, "images", &idx_images(0, 28, 28, &[]));
    let labels = write(&dir, "labels", &idx_labels(&[]));
    let message = message_naming(idx_pair(&images, &labels).unwrap_err(), &images);
    assert_mentions(&message, &["no images"]);
}

/// Debian's `dataset-fashion-mnist` package installs the real files; `BZ_FASHION_MNIST_DIR`
/// points the test at another copy.
#[test]
#[ignore = "needs Fashion-MNIST: apt-get install dataset-fashion-mnist (or set BZ_FASHION_MNIST_DIR)"]
fn fashion_mnist_from_debian_loads() {
    let dir = std::env::var_os("BZ_FASHION_MNIST_DIR").map_or_else(|| PathBuf::from("/usr/share/datasets/fashion-mnist"), PathBuf::from);
    let train = idx_dir(&dir, "train").unwrap();
    let test = idx_dir(&dir, "t10k").unwrap();
    for (set, count) in [(&train, 60_000), (&test, 10_000)] {
        assert_eq!(set.len(), count);
        assert_eq!(set.shape, vec![1, 28, 28]);
        assert_eq!(set.features.len(), count * 784);
        assert_eq!(set.num_classes(), Some(10));
        let mut per_class = [0usize; 10];
        for &label in classes(set) {
            per_class[label as usize] += 1;
        }
        assert_eq!(per_class, [count / 10; 10]);
        assert!(set.features.iter().all(|p| (0.0..=1.0).contains(p)));
    }
}

// ---------------------------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------------------------

fn spec(target: impl Into<ColumnRef>, task: Task) -> CsvSpec<'static> {
    CsvSpec::new(target.into(), task)
}

#[test]
fn csv_with_header_and_integer_labels() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "iris.csv", b"a,b,label,c\n1,2,0,3\n4.5,-5,2,6e1\n");
    let set = formats::csv(&path, &spec("label", Task::Classification)).unwrap();
    assert_eq!(set.len(), 2);
    assert_eq!(set.shape, vec![3]);
    assert_eq!(set.features, vec![1.0, 2.0, 3.0, 4.5, -5.0, 60.0]);
    assert_eq!(classes(&set), &[0, 2]);
    assert_eq!(set.class_names, None);
    assert_eq!(set.num_classes(), Some(3));
}

#[test]
fn csv_without_header_by_index() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "plain.csv", b"3,1,2\n1,4,5\n");
    let mut spec = spec(0, Task::Classification);
    spec.has_header = false;
    let set = formats::csv(&path, &spec).unwrap();
    assert_eq!(set.features, vec![1.0, 2.0, 4.0, 5.0]);
    assert_eq!(classes(&set), &[3, 1]);
}

#[test]
fn csv_string_labels_become_sorted_names() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "pets.csv", b"w,kind\n1,dog\n2,cat\n3,dog\n4,emu\n");
    let set = formats::csv(&path, &spec("kind", Task::Classification)).unwrap();
    let names: Vec<String> = ["cat", "dog", "emu"].map(String::from).to_vec();
    assert_eq!(set.class_names.as_ref(), Some(&names));
    assert_eq!(classes(&set), &[1, 0, 1, 2]);
    assert_eq!(set.num_classes(), Some(3));
}

#[test]
fn csv_mixed_or_negative_labels_are_names() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "signs.csv", b"x,y\n1,-1\n2,1\n3,1.0\n");
    let set = formats::csv(&path, &spec("y", Task::Classification)).unwrap();
    let names: Vec<String> = ["-1", "1", "1.0"].map(String::from).to_vec();
    assert_eq!(set.class_names.as_ref(), Some(&names));
    assert_eq!(classes(&set), &[0, 1, 2]);
}

#[test]
fn csv_integral_float_labels_are_ids() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "floats.csv", b"x,y\n1,2.0\n2,0\n3,1.0\n");
    let set = formats::csv(&path, &spec("y", Task::Classification)).unwrap();
    assert_eq!(classes(&set), &[2, 0, 1]);
    assert_eq!(set.class_names, None);
}

#[test]
fn csv_known_classes_reuse_the_training_mapping() {
    let dir = TempDir::new().unwrap();
    let train = write(&dir, "train.csv", b"w,kind\n1,dog\n2,cat\n3,emu\n");
    let valid = write(&dir, "valid.csv", b"w,kind\n5,emu\n6,emu\n7,dog\n");
    let train = formats::csv(&train, &spec("kind", Task::Classification)).unwrap();
    let names = train.class_names.clone().unwrap();
    let mut valid_spec = spec("kind", Task::Classification);
    valid_spec.known_classes = Some(&names);
    let valid = formats::csv(&valid, &valid_spec).unwrap();
    // Without the training mapping "emu" would be class 0 here.
    assert_eq!(classes(&valid), &[2, 2, 1]);
    assert_eq!(valid.class_names, Some(names.clone()));

    let stray = write(&dir, "stray.csv", b"w,kind\n5,emu\n6,yak\n");
    let message = message_naming(formats::csv(&stray, &valid_spec).unwrap_err(), &stray);
    assert_mentions(&message, &["line 3", "\"kind\"", "\"yak\"", "3 classes", "\"cat\", \"dog\", \"emu\""]);
}

#[test]
fn csv_regression_target() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "houses.csv", b"rooms,price,age\n3,250.5,10\n2,-1e2,40\n");
    let set = formats::csv(&path, &spec("price", Task::Regression)).unwrap();
    assert_eq!(set.features, vec![3.0, 10.0, 2.0, 40.0]);
    assert_eq!(values(&set), (&[250.5, -100.0][..], 1));
    assert_eq!(set.class_names, None);
    assert_eq!(set.num_classes(), None);

    let bad = write(&dir, "bad.csv", b"rooms,price\n3,cheap\n");
    let message = message_naming(formats::csv(&bad, &spec("price", Task::Regression)).unwrap_err(), &bad);
    assert_mentions(&message, &["line 2", "\"price\"", "\"cheap\" is not a number", "regression targets must be numeric"]);
}

#[test]
fn csv_explicit_features_keep_their_order() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "wide.csv", b"id,a,b,c,y\nx1,1,2,3,0\nx2,4,5,6,1\n");
    let mut spec = spec(4, Task::Classification);
    spec.features = Some(vec![ColumnRef::from("c"), ColumnRef::Index(1)]);
    let set = formats::csv(&path, &spec).unwrap();
    assert_eq!(set.shape, vec![2]);
    assert_eq!(set.features, vec![3.0, 1.0, 6.0, 4.0]);
}

#[test]
fn csv_bad_value_names_line_column_and_value() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "bad.csv", b"a,colour,y\n1,2,0\n3,red,1\n");
    let message = message_naming(formats::csv(&path, &spec("y", Task::Classification)).unwrap_err(), &path);
    assert_mentions(&message, &["line 3", "column \"colour\" (index 1)", "\"red\" is not a number", "numeric"]);

    let mut plain = spec(2, Task::Classification);
    plain.has_header = false;
    let path = write(&dir, "bad-plain.csv", b"1,2,0\n3,x,1\n");
    let message = message_naming(formats::csv(&path, &plain).unwrap_err(), &path);
    assert_mentions(&message, &["line 2", "column index 1", "\"x\""]);
}

#[test]
fn csv_missing_and_non_finite_values() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "gaps.csv", b"a,b,y\n1,,0\n");
    let message = message_naming(formats::csv(&path, &spec("y", Task::Classification)).unwrap_err(), &path);
    assert_mentions(&message, &["line 2", "\"b\"", "empty"]);

    let path = write(&dir, "nan.csv", b"a,b,y\n1,NaN,0\n");
    let message = message_naming(formats::csv(&path, &spec("y", Task::Classification)).unwrap_err(), &path);
    assert_mentions(&message, &["line 2", "\"NaN\" is not a finite number"]);

    let path = write(&dir, "nolabel.csv", b"a,y\n1,0\n2,\n");
    let message = message_naming(formats::csv(&path, &spec("y", Task::Classification)).unwrap_err(), &path);
    assert_mentions(&message, &["line 3", "\"y\"", "label is empty"]);
}

#[test]
fn csv_missing_column_lists_the_columns() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "iris.csv", b"sepal,petal,species\n1,2,a\n");
    let message = message_naming(formats::csv(&path, &spec("Species", Task::Classification)).unwrap_err(), &path);
    assert_mentions(&message, &["no target column named \"Species\"", "\"sepal\", \"petal\", \"species\"", "case-sensitive"]);

    let mut features = spec("species", Task::Classification);
    features.features = Some(vec![ColumnRef::from("sepal"), ColumnRef::from("width")]);
    let message = message_naming(formats::csv(&path, &features).unwrap_err(), &path);
    assert_mentions(&message, &["no feature column named \"width\""]);

    let message = message_naming(formats::csv(&path, &spec(3, Task::Classification)).unwrap_err(), &path);
    assert_mentions(&message, &["has 3 columns", "no target column at index 3"]);
}

#[test]
fn csv_names_need_a_header() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "plain.csv", b"1,2,0\n");
    let mut spec = spec("label", Task::Classification);
    spec.has_header = false;
    let message = message_naming(formats::csv(&path, &spec).unwrap_err(), &path);
    assert_mentions(&message, &["\"label\"", "without a header row", "0-based index"]);
}

#[test]
fn csv_ragged_row_is_reported() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "ragged.csv", b"a,b,y\n1,2,0\n1,2\n");
    let message = message_naming(formats::csv(&path, &spec("y", Task::Classification)).unwrap_err(), &path);
    assert_mentions(&message, &["line 3", "2 fields", "the header has 3"]);
}

#[test]
fn csv_empty_files_are_rejected() {
    let dir = TempDir::new().unwrap();
    let empty = write(&dir, "empty.csv", b"");
    let message = message_naming(formats::csv(&empty, &spec("y", Task::Classification)).unwrap_err(), &empty);
    assert_mentions(&message, &["is empty"]);

    let header_only = write(&dir, "header.csv", b"a,y\n");
    let message = message_naming(formats::csv(&header_only, &spec("y", Task::Classification)).unwrap_err(), &header_only);
    assert_mentions(&message, &["no data rows"]);

    let mut plain = spec(0, Task::Classification);
    plain.has_header = false;
    let message = message_naming(formats::csv(&empty, &plain).unwrap_err(), &empty);
    assert_mentions(&message, &["is empty"]);
}

#[test]
fn csv_target_among_features_or_no_features() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "leak.csv", b"a,y\n1,0\n");
    let mut leak = spec("y", Task::Classification);
    leak.features = Some(vec![ColumnRef::from("a"), ColumnRef::from("y")]);
    let message = message_naming(formats::csv(&path, &leak).unwrap_err(), &path);
    assert_mentions(&message, &["target column \"y\" (index 1) among the features"]);

    let mut twice = spec("y", Task::Classification);
    twice.features = Some(vec![ColumnRef::from("a"), ColumnRef::Index(0)]);
    let message = message_naming(formats::csv(&path, &twice).unwrap_err(), &path);
    assert_mentions(&message, &["more than once"]);

    let only_target = write(&dir, "only.csv", b"y\n1\n");
    let message = message_naming(formats::csv(&only_target, &spec("y", Task::Classification)).unwrap_err(), &only_target);
    assert_mentions(&message, &["no feature columns"]);
}

#[test]
fn csv_duplicate_header_names_are_ambiguous() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "dup.csv", b"x,x,y\n1,2,0\n");
    let message = message_naming(formats::csv(&path, &spec("x", Task::Classification)).unwrap_err(), &path);
    assert_mentions(&message, &["2 columns named \"x\"", "[0, 1]", "by its 0-based index"]);
}

#[test]
fn csv_wrong_delimiter_gets_a_hint() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "semi.csv", b"a;b;y\n1;2;0\n");
    let message = message_naming(formats::csv(&path, &spec("y", Task::Classification)).unwrap_err(), &path);
    assert_mentions(&message, &["\"a;b;y\"", "check the delimiter"]);

    let mut semi = spec("y", Task::Classification);
    semi.delimiter = b';';
    let set = formats::csv(&path, &semi).unwrap();
    assert_eq!(set.features, vec![1.0, 2.0]);
}

#[test]
fn csv_tolerates_bom_quotes_spaces_and_crlf() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "excel.csv", b"\xef\xbb\xbf\"a\", b ,y\r\n\"1.5\", 2 , cat \r\n3,4,dog\r\n");
    let mut tabbed = spec("y", Task::Classification);
    tabbed.features = Some(vec![ColumnRef::from("a"), ColumnRef::from("b")]);
    let set = formats::csv(&path, &tabbed).unwrap();
    assert_eq!(set.features, vec![1.5, 2.0, 3.0, 4.0]);
    assert_eq!(set.class_names, Some(vec!["cat".to_owned(), "dog".to_owned()]));

    let tsv = write(&dir, "data.tsv", b"a\ty\n7\t1\n");
    let mut tab = spec("y", Task::Classification);
    tab.delimiter = b'\t';
    assert_eq!(formats::csv(&tsv, &tab).unwrap().features, vec![7.0]);
}

#[test]
fn csv_invalid_utf8_names_the_line() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "latin1.csv", b"a,y\n1,0\n2,caf\xe9\n");
    let message = message_naming(formats::csv(&path, &spec("y", Task::Classification)).unwrap_err(), &path);
    assert_mentions(&message, &["line 3", "not valid UTF-8", "save the file as UTF-8"]);
}

#[test]
fn csv_missing_file_is_named() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("absent.csv");
    let message = message_naming(formats::csv(&path, &spec("y", Task::Classification)).unwrap_err(), &path);
    assert_mentions(&message, &["cannot read"]);
}

// ---------------------------------------------------------------------------------------------
// safetensors
// ---------------------------------------------------------------------------------------------

fn le_bytes<T: Copy, const N: usize>(values: &[T], to_le: fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|&v| to_le(v)).collect()
}

/// Writes tensors given as (name, dtype, shape, little-endian bytes).
fn write_safetensors(dir: &TempDir, name: &str, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> PathBuf {
    let views: Vec<(&str, TensorView)> =
        tensors.iter().map(|(key, dtype, shape, bytes)| (*key, TensorView::new(*dtype, shape.clone(), bytes).unwrap())).collect();
    write(dir, name, &safetensors::serialize(views, None).unwrap())
}

fn read_st(path: &Path, task: Task) -> Result<RawSet, DataError> {
    formats::safetensors(path, "x", "y", task)
}

#[test]
fn safetensors_f32_features_and_i64_classes() {
    let dir = TempDir::new().unwrap();
    let features: Vec<f32> = (0..12).map(|v| v as f32 * 0.5).collect();
    let path = write_safetensors(
        &dir,
        "set.safetensors",
        &[("x", Dtype::F32, vec![3, 2, 2], le_bytes(&features, f32::to_le_bytes)), ("y", Dtype::I64, vec![3], le_bytes(&[2i64, 0, 1], i64::to_le_bytes))],
    );
    let set = read_st(&path, Task::Classification).unwrap();
    assert_eq!(set.len(), 3);
    assert_eq!(set.shape, vec![2, 2]);
    assert_eq!(set.features, features);
    assert_eq!(classes(&set), &[2, 0, 1]);
}

#[test]
fn safetensors_converts_every_dtype() {
    let dir = TempDir::new().unwrap();
    // 1.0, -2.0, 65504 (largest f16), 2^-24 (smallest subnormal f16)
    let f16: Vec<u8> = le_bytes(&[0x3c00u16, 0xc000, 0x7bff, 0x0001], u16::to_le_bytes);
    // 1.0, -2.5, 3.0e38-ish, 0.15625 in bfloat16
    let bf16: Vec<u8> = le_bytes(&[0x3f80u16, 0xc020, 0x7f61, 0x3e20], u16::to_le_bytes);
    let cases: Vec<(Dtype, Vec<u8>, Vec<f32>)> = vec![
        (Dtype::F64, le_bytes(&[1.5f64, -2.0, 1e10, 0.25], f64::to_le_bytes), vec![1.5, -2.0, 1e10, 0.25]),
        (Dtype::F16, f16, vec![1.0, -2.0, 65504.0, 2f32.powi(-24)]),
        (Dtype::BF16, bf16, vec![1.0, -2.5, f32::from_bits(0x7f61_0000), 0.15625]),
        (Dtype::U8, vec![0, 1, 200, 255], vec![0.0, 1.0, 200.0, 255.0]),
        (Dtype::I8, vec![0, 1, 0x80, 0xff], vec![0.0, 1.0, -128.0, -1.0]),
        (Dtype::BOOL, vec![0, 1, 1, 0], vec![0.0, 1.0, 1.0, 0.0]),
        (Dtype::I16, le_bytes(&[-3i16, 4, 5, 6], i16::to_le_bytes), vec![-3.0, 4.0, 5.0, 6.0]),
        (Dtype::U16, le_bytes(&[3u16, 40000, 5, 6], u16::to_le_bytes), vec![3.0, 40000.0, 5.0, 6.0]),
        (Dtype::I32, le_bytes(&[-3i32, 4, 5, 6], i32::to_le_bytes), vec![-3.0, 4.0, 5.0, 6.0]),
        (Dtype::U32, le_bytes(&[3u32, 4, 5, 6], u32::to_le_bytes), vec![3.0, 4.0, 5.0, 6.0]),
        (Dtype::I64, le_bytes(&[-3i64, 4, 5, 6], i64::to_le_bytes), vec![-3.0, 4.0, 5.0, 6.0]),
        (Dtype::U64, le_bytes(&[3u64, 4, 5, 6], u64::to_le_bytes), vec![3.0, 4.0, 5.0, 6.0]),
    ];
    for (dtype, bytes, expected) in cases {
        let path = write_safetensors(&dir, "dtype.safetensors", &[("x", dtype, vec![2, 2], bytes), ("y", Dtype::U8, vec![2], vec![1, 0])]);
        let set = read_st(&path, Task::Classification).unwrap();
        assert_eq!(set.features, expected, "{dtype:?}");
        assert_eq!(classes(&set), &[1, 0], "{dtype:?}");
    }
}

#[test]
fn safetensors_one_dimensional_features_are_one_feature_each() {
    let dir = TempDir::new().unwrap();
    let path = write_safetensors(
        &dir,
        "flat.safetensors",
        &[("x", Dtype::F32, vec![2], le_bytes(&[1.0f32, 2.0], f32::to_le_bytes)), ("y", Dtype::I32, vec![2], le_bytes(&[0i32, 1], i32::to_le_bytes))],
    );
    let set = read_st(&path, Task::Classification).unwrap();
    assert_eq!(set.shape, vec![1]);
    assert_eq!(set.len(), 2);
}

#[test]
fn safetensors_regression_targets() {
    let dir = TempDir::new().unwrap();
    let x = le_bytes(&[1.0f32, 2.0], f32::to_le_bytes);
    let wide = write_safetensors(
        &dir,
        "wide.safetensors",
        &[("x", Dtype::F32, vec![2, 1], x.clone()), ("y", Dtype::F64, vec![2, 3], le_bytes(&[1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], f64::to_le_bytes))],
    );
    let set = read_st(&wide, Task::Regression).unwrap();
    assert_eq!(values(&set), (&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0][..], 3));

    let counts = write_safetensors(
        &dir,
        "counts.safetensors",
        &[("x", Dtype::F32, vec![2, 1], x.clone()), ("y", Dtype::I64, vec![2], le_bytes(&[7i64, 9], i64::to_le_bytes))],
    );
    let set = read_st(&counts, Task::Regression).unwrap();
    assert_eq!(values(&set), (&[7.0, 9.0][..], 1));

    let cube = write_safetensors(
        &dir,
        "cube.safetensors",
        &[("x", Dtype::F32, vec![2, 1], x), ("y", Dtype::F32, vec![2, 1, 1], le_bytes(&[1.0f32, 2.0], f32::to_le_bytes))],
    );
    let message = message_naming(read_st(&cube, Task::Regression).unwrap_err(), &cube);
    assert_mentions(&message, &["\"y\"", "[2, 1, 1]", "[N] or [N, W]"]);
}

#[test]
fn safetensors_missing_key_lists_the_keys() {
    let dir = TempDir::new().unwrap();
    let path = write_safetensors(&dir, "keys.safetensors", &[("images", Dtype::U8, vec![2, 2], vec![1, 2, 3, 4]), ("labels", Dtype::U8, vec![2], vec![0, 1])]);
    let message = message_naming(read_st(&path, Task::Classification).unwrap_err(), &path);
    assert_mentions(&message, &["no features tensor named \"x\"", "\"images\" (U8 [2, 2])", "\"labels\" (U8 [2])"]);
    let message = message_naming(formats::safetensors(&path, "images", "targets", Task::Classification).unwrap_err(), &path);
    assert_mentions(&message, &["no targets tensor named \"targets\"", "\"labels\""]);
    let set = formats::safetensors(&path, "images", "labels", Task::Classification).unwrap();
    assert_eq!(set.len(), 2);
}

#[test]
fn safetensors_count_mismatch() {
    let dir = TempDir::new().unwrap();
    let path = write_safetensors(&dir, "mismatch.safetensors", &[("x", Dtype::U8, vec![3, 1], vec![1, 2, 3]), ("y", Dtype::U8, vec![2], vec![0, 1])]);
    let message = message_naming(read_st(&path, Task::Classification).unwrap_err(), &path);
    assert_mentions(&message, &["\"x\" has 3 samples", "\"y\" has 2"]);
}

#[test]
fn safetensors_classification_needs_integer_ids() {
    let dir = TempDir::new().unwrap();
    let x = vec![1u8, 2];
    let float = write_safetensors(
        &dir,
        "float.safetensors",
        &[("x", Dtype::U8, vec![2, 1], x.clone()), ("y", Dtype::F32, vec![2], le_bytes(&[0.0f32, 1.0], f32::to_le_bytes))],
    );
    let message = message_naming(read_st(&float, Task::Classification).unwrap_err(), &float);
    assert_mentions(&message, &["F32", "integer class ids", "int64"]);

    let one_hot = write_safetensors(&dir, "onehot.safetensors", &[("x", Dtype::U8, vec![2, 1], x.clone()), ("y", Dtype::U8, vec![2, 2], vec![1, 0, 0, 1])]);
    let message = message_naming(read_st(&one_hot, Task::Classification).unwrap_err(), &one_hot);
    assert_mentions(&message, &["shape [2, 2]", "[N]", "argmax"]);

    let negative = write_safetensors(&dir, "negative.safetensors", &[("x", Dtype::U8, vec![2, 1], x), ("y", Dtype::I8, vec![2], vec![0, 0xff])]);
    let message = message_naming(read_st(&negative, Task::Classification).unwrap_err(), &negative);
    assert_mentions(&message, &["class id -1 at position 1"]);
}

#[test]
fn safetensors_rejects_non_finite_and_exotic_dtypes() {
    let dir = TempDir::new().unwrap();
    let y = ("y", Dtype::U8, vec![2], vec![0u8, 1]);
    let nan = write_safetensors(&dir, "nan.safetensors", &[("x", Dtype::F32, vec![2, 1], le_bytes(&[1.0f32, f32::NAN], f32::to_le_bytes)), y.clone()]);
    let message = message_naming(read_st(&nan, Task::Classification).unwrap_err(), &nan);
    assert_mentions(&message, &["NaN or infinite", "element 1"]);

    let fp8 = write_safetensors(&dir, "fp8.safetensors", &[("x", Dtype::F8_E4M3, vec![2, 1], vec![1, 2]), y]);
    let message = message_naming(read_st(&fp8, Task::Classification).unwrap_err(), &fp8);
    assert_mentions(&message, &["F8_E4M3", "float32"]);
}

#[test]
fn safetensors_garbage_and_missing_files() {
    let dir = TempDir::new().unwrap();
    let garbage = write(&dir, "garbage.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!");
    let message = message_naming(read_st(&garbage, Task::Classification).unwrap_err(), &garbage);
    assert_mentions(&message, &["not a valid safetensors file"]);

    let missing = dir.path().join("absent.safetensors");
    let message = message_naming(read_st(&missing, Task::Classification).unwrap_err(), &missing);
    assert_mentions(&message, &["cannot read"]);
}

#[test]
fn safetensors_empty_set_is_rejected() {
    let dir = TempDir::new().unwrap();
    let path = write_safetensors(&dir, "empty.safetensors", &[("x", Dtype::F32, vec![0, 3], vec![]), ("y", Dtype::I64, vec![0], vec![])]);
    let message = message_naming(read_st(&path, Task::Classification).unwrap_err(), &path);
    assert_mentions(&message, &["no samples"]);
}

// ---------------------------------------------------------------------------------------------
// Digits
// ---------------------------------------------------------------------------------------------

#[test]
fn digits_match_scikit_learn() {
    let set = digits().unwrap();
    assert_eq!(set.len(), 1797);
    assert_eq!(set.shape, vec![1, 8, 8]);
    assert_eq!(set.sample_len(), 64);
    assert_eq!(set.features.len(), 1797 * 64);
    assert_eq!(set.num_classes(), Some(10));
    assert_eq!(set.class_names, None);

    let mut per_class = [0usize; 10];
    for &label in classes(&set) {
        per_class[label as usize] += 1;
    }
    assert_eq!(per_class, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);

    // sklearn.datasets.load_digits().data[0] and .target[0]
    let first: [u8; 64] = [
        0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12, 0, 0, 8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7,
        0, 0, 2, 14, 5, 10, 12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0,
    ];
    let expected: Vec<f32> = first.iter().map(|&p| f32::from(p) / 16.0).collect();
    assert_eq!(&set.features[..64], &expected[..]);
    assert_eq!(classes(&set)[..3], [0, 1, 2]);
    assert!(set.features.iter().all(|p| (0.0..=1.0).contains(p)));
    assert!(set.features.contains(&1.0));
}

// ---------------------------------------------------------------------------------------------
// Synthetic
// ---------------------------------------------------------------------------------------------

#[test]
fn synthetic_is_reproducible() {
    for task in [Task::Classification, Task::Regression] {
        let a = synthetic(task, 300, 5, 4, 1.0, 42).unwrap();
        let b = synthetic(task, 300, 5, 4, 1.0, 42).unwrap();
        let c = synthetic(task, 300, 5, 4, 1.0, 43).unwrap();
        assert_eq!(a, b, "{task:?}");
        assert_ne!(a.features, c.features, "{task:?}");
        assert_ne!(a.targets, c.targets, "{task:?}");
    }
}

/// Pinned output: a change here means every seeded experiment changes too (for instance after
/// a rand upgrade), which must be a deliberate decision.
#[test]
fn synthetic_output_is_pinned() {
    let blobs = synthetic(Task::Classification, 100, 3, 4, 1.0, 7).unwrap();
    assert_eq!(&blobs.features[..4], &PINNED_BLOB_FEATURES);
    assert_eq!(&classes(&blobs)[..8], &PINNED_BLOB_LABELS);
    let line = synthetic(Task::Regression, 100, 3, 0, 0.5, 7).unwrap();
    assert_eq!(&line.features[..4], &PINNED_LINE_FEATURES);
    assert_eq!(&values(&line).0[..2], &PINNED_LINE_TARGETS);
}

const PINNED_BLOB_FEATURES: [f32; 4] = [-3.7982624, 2.4769166, -2.8032796, 1.8291235];
const PINNED_BLOB_LABELS: [i64; 8] = [2, 3, 0, 2, 0, 0, 2, 0];
const PINNED_LINE_FEATURES: [f32; 4] = [0.300009, -0.64998645, -1.1292794, -0.26975897];
const PINNED_LINE_TARGETS: [f32; 2] = [0.56265515, -2.6318102];

#[test]
fn synthetic_shapes_and_balanced_labels() {
    let set = synthetic(Task::Classification, 103, 7, 10, 1.0, 1).unwrap();
    assert_eq!(set.len(), 103);
    assert_eq!(set.shape, vec![7]);
    assert_eq!(set.features.len(), 103 * 7);
    assert_eq!(set.num_classes(), Some(10));
    let mut per_class = [0usize; 10];
    for &label in classes(&set) {
        per_class[label as usize] += 1;
    }
    assert_eq!(per_class, [11, 11, 11, 10, 10, 10, 10, 10, 10, 10]);
    // Shuffled, not 0, 1, 2, ... in order.
    assert_ne!(&classes(&set)[..10], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);

    let set = synthetic(Task::Regression, 50, 3, 0, 1.0, 1).unwrap();
    assert_eq!(set.len(), 50);
    assert_eq!(set.shape, vec![3]);
    assert_eq!(set.features.len(), 150);
    assert_eq!(values(&set).1, 1);
    assert_eq!(set.num_classes(), None);
}

/// Nearest-centroid accuracy on held-out samples: for equal isotropic blobs that is about what
/// the best linear model gets.
fn centroid_accuracy(set: &RawSet, classes_n: usize) -> f64 {
    let labels = classes(set);
    let d = set.sample_len();
    let half = set.len() / 2;
    let mut centres = vec![0.0f64; classes_n * d];
    let mut counts = vec![0usize; classes_n];
    for (row, &label) in set.features.chunks_exact(d).zip(labels).take(half) {
        let k = label as usize;
        counts[k] += 1;
        for (centre, x) in centres[k * d..][..d].iter_mut().zip(row) {
            *centre += f64::from(*x);
        }
    }
    for (centre, count) in centres.chunks_exact_mut(d).zip(&counts) {
        centre.iter_mut().for_each(|c| *c /= *count as f64);
    }
    let correct = (half..set.len())
        .filter(|&i| {
            let row = &set.features[i * d..][..d];
            let distance = |k: usize| -> f64 { row.iter().zip(&centres[k * d..][..d]).map(|(x, c)| (f64::from(*x) - c).powi(2)).sum() };
            let best = (0..classes_n).min_by(|&a, &b| distance(a).total_cmp(&distance(b)));
            best == Some(labels[i] as usize)
        })
        .count();
    correct as f64 / (set.len() - half) as f64
}

#[test]
fn synthetic_blobs_are_learnable_but_not_trivial() {
    for (classes_n, features) in [(2, 2), (3, 1), (10, 2), (10, 64)] {
        let set = synthetic(Task::Classification, 4000, features, classes_n, 1.0, 3).unwrap();
        let accuracy = centroid_accuracy(&set, classes_n);
        assert!((0.9..0.995).contains(&accuracy), "{classes_n} classes in {features} dims: {accuracy}");
        // Less noise, easier task.
        let easy = synthetic(Task::Classification, 4000, features, classes_n, 0.25, 3).unwrap();
        assert!(centroid_accuracy(&easy, classes_n) > 0.999, "{classes_n} classes in {features} dims");
    }
}

#[test]
fn synthetic_regression_noise_is_what_was_asked() {
    // The same seed draws the same x, w and b whatever the noise, so the difference of the
    // targets is the noise alone.
    let clean = synthetic(Task::Regression, 5000, 4, 0, 0.0, 9).unwrap();
    let noisy = synthetic(Task::Regression, 5000, 4, 0, 2.0, 9).unwrap();
    assert_eq!(clean.features, noisy.features);
    let diffs: Vec<f64> = values(&noisy).0.iter().zip(values(&clean).0).map(|(a, b)| f64::from(a - b)).collect();
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    let std = (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / diffs.len() as f64).sqrt();
    assert!(mean.abs() < 0.1, "{mean}");
    assert!((std - 2.0).abs() < 0.1, "{std}");
}

#[test]
fn synthetic_rejects_impossible_settings() {
    let cases = [
        (Task::Classification, 0, 2, 2, 1.0, "0 samples"),
        (Task::Regression, 10, 0, 0, 1.0, "0 features"),
        (Task::Classification, 10, 2, 1, 1.0, "1 classes"),
        (Task::Classification, 3, 2, 5, 1.0, "3 samples cannot cover 5 classes"),
        (Task::Regression, 10, 2, 0, -1.0, "noise -1"),
        (Task::Classification, 20_000, 2, 10_001, 1.0, "more than the 10000 supported"),
        (Task::Regression, 10, 2, 0, f32::NAN, "noise NaN"),
    ];
    for (task, samples, features, classes_n, noise, expected) in cases {
        let message = synthetic(task, samples, features, classes_n, noise, 0).unwrap_err().to_string();
        assert_mentions(&message, &["synthetic dataset", expected]);
    }
}
