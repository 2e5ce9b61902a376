//! Generated `quarry.v1` types (`pb`) and their conversions to and from domain types.

pub mod convert;

pub mod pb {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/quarry.v1.rs"));
}

pub use convert::ConversionError;
