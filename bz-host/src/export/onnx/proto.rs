//! The part of the ONNX protobuf schema bz writes, as `prost` derive structs: no protoc and no build script.
//!
//! Field numbers, types and packing are those of `onnx/onnx.proto` as shipped by the `onnx` 1.23.2 Python
//! package (package `onnx`, `syntax = "proto2"`, `IR_VERSION` 14 in the schema); only the fields bz writes are declared, and
//! a reader skips what it does not know. proto2 tells a field that is set apart from one that is absent, and
//! `onnx.checker` insists that an attribute carries exactly one value field, so [`AttributeProto`]'s value fields are
//! `optional` (an attribute `axis = 0` must still be written). Elsewhere an absent field reads as its default, which
//! is the value bz means, so plain fields are enough. proto2's repeated scalars are unpacked unless the schema says
//! `[packed = true]` (only `TensorProto`'s `*_data` fields do); readers accept both, but bz writes what it says.

/// `TensorProto.DataType.FLOAT`.
pub const FLOAT: i32 = 1;
/// `TensorProto.DataType.INT64`.
pub const INT64: i32 = 7;

#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    #[prost(string, tag = "2")]
    pub producer_name: String,
    #[prost(string, tag = "3")]
    pub producer_version: String,
    #[prost(string, tag = "4")]
    pub domain: String,
    #[prost(int64, tag = "5")]
    pub model_version: i64,
    #[prost(string, tag = "6")]
    pub doc_string: String,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OperatorSetIdProto {
    /// Empty: the default `ai.onnx` domain.
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(string, tag = "10")]
    pub doc_string: String,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "13")]
    pub value_info: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(string, tag = "7")]
    pub domain: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    #[prost(string, tag = "6")]
    pub doc_string: String,
}

/// `AttributeProto.AttributeType`, the values bz uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum AttributeType {
    Undefined = 0,
    Float = 1,
    Int = 2,
    String = 3,
    Tensor = 4,
    Graph = 5,
    Floats = 6,
    Ints = 7,
    Strings = 8,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(enumeration = "AttributeType", optional, tag = "20")]
    pub r#type: Option<i32>,
    #[prost(float, optional, tag = "2")]
    pub f: Option<f32>,
    #[prost(int64, optional, tag = "3")]
    pub i: Option<i64>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub s: Option<Vec<u8>>,
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    #[prost(float, repeated, packed = "false", tag = "7")]
    pub floats: Vec<f32>,
    #[prost(int64, repeated, packed = "false", tag = "8")]
    pub ints: Vec<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    #[prost(int64, repeated, packed = "false", tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(float, repeated, packed = "true", tag = "4")]
    pub float_data: Vec<f32>,
    #[prost(int64, repeated, packed = "true", tag = "7")]
    pub int64_data: Vec<i64>,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(string, tag = "12")]
    pub doc_string: String,
    /// Little-endian values, row-major: what bz writes (one copy, no per-value varints).
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
    #[prost(string, tag = "3")]
    pub doc_string: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeProto {
    #[prost(oneof = "type_proto::Value", tags = "1")]
    pub value: Option<type_proto::Value>,
    #[prost(string, tag = "6")]
    pub denotation: String,
}

pub mod type_proto {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(message, tag = "1")]
        TensorType(Tensor),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Tensor {
        #[prost(int32, tag = "1")]
        pub elem_type: i32,
        #[prost(message, optional, tag = "2")]
        pub shape: Option<super::TensorShapeProto>,
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<tensor_shape_proto::Dimension>,
}

pub mod tensor_shape_proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dimension {
        #[prost(oneof = "dimension::Value", tags = "1, 2")]
        pub value: Option<dimension::Value>,
        #[prost(string, tag = "3")]
        pub denotation: String,
    }

    pub mod dimension {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(int64, tag = "1")]
            DimValue(i64),
            /// A symbolic dimension, e.g. `batch`.
            #[prost(string, tag = "2")]
            DimParam(String),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn messages_round_trip_and_zero_valued_attributes_are_written() {
        let attr = AttributeProto { name: "axis".into(), r#type: Some(AttributeType::Int as i32), i: Some(0), ..Default::default() };
        let bytes = attr.encode_to_vec();
        // Field 3 (varint) with value 0 is present: tag byte 3 << 3 = 0x18, then 0x00.
        assert!(bytes.windows(2).any(|w| w == [0x18, 0x00]), "{bytes:?}");
        assert_eq!(AttributeProto::decode(&bytes[..]).unwrap(), attr);

        let dim = |v| tensor_shape_proto::Dimension { value: Some(v), denotation: String::new() };
        let shape = TensorShapeProto {
            dim: vec![dim(tensor_shape_proto::dimension::Value::DimParam("batch".into())), dim(tensor_shape_proto::dimension::Value::DimValue(10))],
        };
        let tensor = type_proto::Tensor { elem_type: FLOAT, shape: Some(shape) };
        let input = ValueInfoProto {
            name: "input".into(),
            r#type: Some(TypeProto { value: Some(type_proto::Value::TensorType(tensor)), denotation: String::new() }),
            doc_string: String::new(),
        };
        let weight = TensorProto { dims: vec![2, 2], data_type: FLOAT, name: "w".into(), raw_data: vec![0; 16], ..Default::default() };
        let model = ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
            producer_name: "bz".into(),
            graph: Some(GraphProto { input: vec![input], initializer: vec![weight], ..Default::default() }),
            metadata_props: vec![StringStringEntryProto { key: "task".into(), value: "classification".into() }],
            ..Default::default()
        };
        assert_eq!(ModelProto::decode(&model.encode_to_vec()[..]).unwrap(), model);
    }

    #[test]
    fn dims_are_unpacked_and_float_data_packed_as_the_schema_says() {
        let t = TensorProto { dims: vec![3, 4], float_data: vec![1.0, 2.0], ..Default::default() };
        let bytes = t.encode_to_vec();
        // dims: two separate field-1 varints (0x08 3, 0x08 4); float_data: one field-4 length-delimited run (0x22, 8 bytes).
        assert_eq!(&bytes[..4], &[0x08, 3, 0x08, 4]);
        assert_eq!(&bytes[4..6], &[0x22, 8]);
    }
}
